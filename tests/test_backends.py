"""PromptCodec unit tests, and HF-vs-vLLM end-to-end runs on tiny real models."""

from __future__ import annotations

import multiprocessing
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kdeval.backends import load_backend, vllm_available
from kdeval.backends.base import Backend, GenerationSettings, ModelInfo
from kdeval.backends.prompting import PromptCodec, choice_sequence, fit_prompt
from kdeval.errors import UserError
from kdeval.tasks import ChoiceRequest, GenerateRequest, Message, Output, Request, user_turn

SETTINGS = GenerationSettings(dtype="float32", batch_size=8)
needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")


@pytest.fixture(scope="module")
def codec(tiny_model_dir: Path) -> PromptCodec:
    return PromptCodec.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def chat_codec(tiny_chat_model_dir: Path) -> PromptCodec:
    return PromptCodec.from_pretrained(str(tiny_chat_model_dir))


# -- rendering --------------------------------------------------------------------------------


def test_plain_single_turn_is_the_content(codec: PromptCodec) -> None:
    assert not codec.chat_template_used
    assert codec.render(user_turn("Is the sky blue?")) == "Is the sky blue?"
    assert codec.render(user_turn("Q?", system="Be brief.")) == "Be brief.\n\nQ?"


def test_plain_multi_turn(codec: PromptCodec) -> None:
    turns = (Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "Bye"))
    assert codec.render(turns) == "User: Hi\n\nAssistant: Hello.\n\nUser: Bye\n\nAssistant:"


def test_chat_template_used_when_present(chat_codec: PromptCodec, tiny_chat_model_dir: Path) -> None:
    assert chat_codec.chat_template_used
    assert chat_codec.render(user_turn("hi")) == "<s><|user|>\nhi\n<|assistant|>\n"
    plain = PromptCodec.from_pretrained(str(tiny_chat_model_dir), use_chat_template=False)
    assert plain.render(user_turn("hi")) == "hi"


def test_asking_for_a_missing_chat_template_fails(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="chat_template"):
        PromptCodec.from_pretrained(str(tiny_model_dir), use_chat_template=True)


@pytest.mark.parametrize("which", ["codec", "chat_codec"])
def test_prompt_has_exactly_one_bos(which: str, request: pytest.FixtureRequest) -> None:
    c: PromptCodec = request.getfixturevalue(which)
    ids = c.encode_prompt(GenerateRequest(user_turn("the quick brown fox"), max_tokens=4))
    assert ids[0] == c.tokenizer.bos_token_id
    assert ids.count(c.tokenizer.bos_token_id) == 1


# -- multiple choice splitting ----------------------------------------------------------------


def test_choices_split_context_and_continuation(codec: PromptCodec) -> None:
    req = ChoiceRequest(user_turn("Is the sky blue? Answer:"), (" yes", " no", " the teacher"))
    pairs = codec.encode_choices(req)
    context = codec.encode_text("Is the sky blue? Answer:")
    for (ctx, cont), choice in zip(pairs, req.choices, strict=True):
        assert ctx == context and cont
        assert ctx + cont == codec.encode_text("Is the sky blue? Answer:" + choice)


def test_trailing_space_moves_to_the_continuation(codec: PromptCodec) -> None:
    spaced = codec.encode_choices(ChoiceRequest(user_turn("Answer: "), ("yes",)))
    unspaced = codec.encode_choices(ChoiceRequest(user_turn("Answer:"), (" yes",)))
    assert spaced == unspaced


def test_empty_choice_is_rejected(codec: PromptCodec) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        codec.encode_choices(ChoiceRequest(user_turn("Q"), ("a", "")))


def test_windows_truncate_from_the_left() -> None:
    assert fit_prompt(list(range(10)), 4, 8) == ([6, 7, 8, 9], 4)
    assert fit_prompt(list(range(3)), 100, 8) == ([0, 1, 2], 4)  # answer capped at half the window
    # vLLM generates one token after the prompt, so a scored sequence stops one short.
    assert choice_sequence(list(range(10)), [98, 99], 8) == [5, 6, 7, 8, 9, 98, 99]


# -- decoding ---------------------------------------------------------------------------------


def test_decode_drops_eos_and_after_and_special_tokens(codec: PromptCodec) -> None:
    words = codec.encode_text("the fox")[1:]  # without BOS
    eos, bos = codec.eos_ids[0], codec.tokenizer.bos_token_id
    assert codec.decode([bos, *words, eos, *words]) == "the fox"


def test_decode_cuts_at_the_first_stop_string(codec: PromptCodec) -> None:
    ids = codec.encode_text("the cat. the dog\nthe fox")[1:]
    assert codec.decode(ids, ("\n",)) == "the cat. the dog"
    assert codec.decode(ids, ("\n", ".")) == "the cat"
    assert codec.decode(ids, ("zebra",)) == "the cat. the dog\nthe fox"


def test_finish_keeps_ids_up_to_the_stop_and_counts_eos(codec: PromptCodec) -> None:
    eos = codec.eos_ids[0]
    ids = codec.encode_text("the cat. the dog")[1:]
    done = codec.finish([*ids, eos, 7, 7], ())
    assert (done.token_ids, done.text, done.output_tokens) == (ids, "the cat. the dog", len(ids) + 1)
    done = codec.finish([*ids, eos], (".",))
    assert done.text == "the cat"
    assert "." in codec.decode(done.token_ids) and "." not in codec.decode(done.token_ids[:-1])
    assert done.output_tokens == len(done.token_ids)  # ended by the stop string, not by EOS


# -- loading ----------------------------------------------------------------------------------


def test_backends_package_imports_nothing_heavy() -> None:
    code = "import sys, kdeval.backends; print(sorted({'torch', 'transformers', 'vllm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_backend_kind(tiny_model_dir: Path) -> None:
    with pytest.raises(UserError, match="unknown backend 'onnx'.*backends: vllm, hf, openai"):
        load_backend("onnx", str(tiny_model_dir), SETTINGS)


# -- end to end: HF and vLLM on the same tiny model ---------------------------------------------

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "teacher",
    "student",
    "model",
    "answer",
    "question",
    "paris",
    "sky",
    "blue",
    "cat",
    "river",
]
STOPS: list[tuple[str, ...]] = [(), ("e",), ("\n",), (" the", "."), ("a", "o")]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _requests(n_generate: int = 40, n_choice: int = 30, seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    reqs: list[Request] = []
    for i in range(n_generate):
        messages = user_turn(_text(rng, 2, 40), system="Answer briefly." if i % 7 == 0 else None)
        if i % 9 == 0:  # a multi-turn conversation
            messages = (*messages, Message("assistant", _text(rng, 1, 5)), Message("user", _text(rng, 1, 5)))
        reqs.append(GenerateRequest(messages, max_tokens=rng.choice([1, 4, 16, 32]), stop=STOPS[i % 5]))
    for _ in range(n_choice):
        choices = tuple(" " + _text(rng, 1, 3) for _ in range(rng.randint(2, 4)))
        reqs.append(ChoiceRequest(user_turn(f"Question: {_text(rng, 2, 20)} Answer:"), choices))
    return reqs


@dataclass
class Run:
    outputs: dict[int, Output] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _run(backend: Backend, requests: list[Request]) -> Run:
    run = Run()

    def on_done(i: int, out: Output) -> None:
        run.calls.append(i)
        run.outputs[i] = out

    start = time.perf_counter()
    backend.run(requests, on_done)
    run.seconds = time.perf_counter() - start
    return run


REQUESTS = _requests()
GEN = [i for i, r in enumerate(REQUESTS) if isinstance(r, GenerateRequest)]
CHOICE = [i for i, r in enumerate(REQUESTS) if isinstance(r, ChoiceRequest)]


@pytest.fixture(scope="module")
def hf_run(tiny_model_dir: Path) -> Iterator[tuple[Run, ModelInfo]]:
    backend = load_backend("hf", str(tiny_model_dir), SETTINGS)
    yield _run(backend, REQUESTS), backend.info
    backend.close()


@pytest.fixture(scope="module")
def vllm_backend(tiny_model_dir: Path) -> Iterator[Backend]:
    """The one vLLM engine of this module (engine start takes ~20 s on CPU)."""
    backend = load_backend("vllm", str(tiny_model_dir), SETTINGS)
    yield backend
    backend.close()  # idempotent: the last test closes it already


@pytest.fixture(scope="module")
def vllm_run(vllm_backend: Backend) -> Run:
    return _run(vllm_backend, REQUESTS)


def _check_outputs(run: Run) -> None:
    assert sorted(run.calls) == list(range(len(REQUESTS)))  # each request reported exactly once
    for i in GEN:
        req, out = REQUESTS[i], run.outputs[i]
        assert isinstance(req, GenerateRequest)
        assert 1 <= out.output_tokens <= req.max_tokens and len(out.token_ids) <= out.output_tokens
        assert out.prompt_tokens > 0 and out.prompt
        assert not any(s in out.text for s in req.stop)
    for i in CHOICE:
        req, out = REQUESTS[i], run.outputs[i]
        assert isinstance(req, ChoiceRequest)
        assert len(out.choice_logprobs) == len(req.choices)
        assert all(lp < 0 for lp in out.choice_logprobs)


@pytest.mark.slow
def test_hf_serves_every_request_once(hf_run: tuple[Run, ModelInfo]) -> None:
    run, info = hf_run
    _check_outputs(run)
    assert info.dtype == "float32" and not info.chat_template and info.n_params


@pytest.mark.slow
def test_hf_sampling_is_seeded(tiny_model_dir: Path, hf_run: tuple[Run, ModelInfo]) -> None:
    settings = GenerationSettings(dtype="float32", temperature=0.8, top_p=0.9, seed=3, batch_size=4)
    backend = load_backend("hf", str(tiny_model_dir), settings)
    requests = [REQUESTS[i] for i in GEN[:12]]
    first, second = _run(backend, requests), _run(backend, requests)
    backend.close()
    assert all(first.outputs[i].token_ids == second.outputs[i].token_ids for i in range(12))
    greedy = hf_run[0].outputs
    assert any(first.outputs[k].token_ids != greedy[i].token_ids for k, i in enumerate(GEN[:12]))


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_serves_every_request_once(vllm_run: Run, vllm_backend: Backend) -> None:
    _check_outputs(vllm_run)
    assert vllm_backend.info.dtype == "float32" and vllm_backend.info.n_params


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_backends_agree_on_choices(hf_run: tuple[Run, ModelInfo], vllm_run: Run) -> None:
    hf = hf_run[0].outputs
    for i in CHOICE:
        assert hf[i].choice_logprobs == pytest.approx(vllm_run.outputs[i].choice_logprobs, abs=1e-3)
        assert hf[i].choice == vllm_run.outputs[i].choice


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_backends_agree_on_generations(
    hf_run: tuple[Run, ModelInfo], vllm_run: Run, codec: PromptCodec, capsys: pytest.CaptureFixture[str]
) -> None:
    hf, vl = hf_run[0].outputs, vllm_run.outputs
    same = [i for i in GEN if hf[i].token_ids == vl[i].token_ids]
    for i in same:
        assert hf[i].text == vl[i].text  # same ids, same text: decoding is shared
        assert hf[i].output_tokens == vl[i].output_tokens
    for i in GEN:
        req = REQUESTS[i]
        assert isinstance(req, GenerateRequest)
        assert vl[i].text == codec.decode(vl[i].token_ids, req.stop)
    eos_ended = sum(hf[i].output_tokens > len(hf[i].token_ids) for i in GEN)
    with capsys.disabled():
        print(f"\n[backends] identical token ids: {len(same)}/{len(GEN)}; ended on EOS: {eos_ended}")
    assert len(same) >= 0.9 * len(GEN)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_interrupted_run_leaves_the_engine_usable(vllm_backend: Backend) -> None:
    calls: list[int] = []

    def fail_on_third(i: int, out: Output) -> None:
        calls.append(i)
        if len(calls) == 3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        vllm_backend.run(REQUESTS[:20], fail_on_third)
    again = _run(vllm_backend, REQUESTS[:5])  # the aborted requests do not come back here
    assert sorted(again.calls) == [0, 1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_close_frees_the_engine_for_the_next_model(
    vllm_backend: Backend, tiny_chat_model_dir: Path
) -> None:
    """Runs last: closes the module's engine, then serves a second model in the same process."""
    vllm_backend.close()
    assert not multiprocessing.active_children()  # the engine-core process is gone
    requests = _requests(8, 6, seed=1)
    hf = load_backend("hf", str(tiny_chat_model_dir), SETTINGS)
    expected = _run(hf, requests).outputs
    hf.close()
    chat = load_backend("vllm", str(tiny_chat_model_dir), SETTINGS)
    try:
        got = _run(chat, requests).outputs
        assert chat.info.chat_template
    finally:
        chat.close()
    for i, out in expected.items():
        assert out.prompt == got[i].prompt and out.prompt.startswith("<s><|")
        assert out.choice_logprobs == pytest.approx(got[i].choice_logprobs, abs=1e-3)


def test_context_is_capped_at_the_models_own(tmp_path: Path) -> None:
    from kdeval.backends.base import GenerationSettings
    from kdeval.backends.local import fit_context

    (tmp_path / "config.json").write_text('{"max_position_embeddings": 512}')
    assert fit_context(str(tmp_path), GenerationSettings(max_model_len=2048)).max_model_len == 512
    assert fit_context(str(tmp_path), GenerationSettings(max_model_len=256)).max_model_len == 256
    assert fit_context("org/hub-id", GenerationSettings()).max_model_len == 2048
