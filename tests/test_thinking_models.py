"""Tiny *reasoning* models: trained in seconds to write a thinking trace, then an answer, and
greedy-decode the same ids in transformers and vLLM (see kdeval.tinymodels.build_memorizing_model)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kdeval.tinymodels import BOS, THINK_CLOSE, THINK_OPEN, THINK_TEMPLATE, build_memorizing_model

MATH_DATA = Path(__file__).resolve().parents[1] / "suites" / "math" / "data" / "test.jsonl"
OPEN_ENDED = {3, 6}  # these traces never close: no </think>, no answer, then EOS
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")


def _render(user_text: str) -> str:
    """THINK_TEMPLATE rendered as transformers does (the tokenizer does not exist yet)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "user", "content": user_text}]
    return env.from_string(THINK_TEMPLATE).render(
        messages=messages, bos_token=BOS, add_generation_prompt=True
    )


def _math_pairs(n: int = 8) -> list[tuple[str, str, str]]:
    """(user message, rendered prompt, completion) for the first n math test questions. The traces
    hold the math task's stop string "Question:" and newlines on purpose."""
    with MATH_DATA.open() as f:
        records = [json.loads(line) for line, _ in zip(f, range(n), strict=False)]
    out = []
    for i, rec in enumerate(records):
        *steps, final = rec["answer"].split("\n")
        asked = rec["question"].rsplit(". ", 1)[-1]
        trace = "Let me think. Question: what is asked? " + asked + "\n" + "\n".join(steps)
        if i in OPEN_ENDED:
            completion = trace + "\nHmm, let me check that again."
        else:
            completion = f"{trace}\n{THINK_CLOSE}\nThe answer is #### {final.removeprefix('#### ')}"
        user = f"Question: {rec['question']}\nAnswer:"
        out.append((user, _render(user), completion))
    return out


PAIRS = _math_pairs()


@pytest.fixture(scope="module")
def reasoning_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401  (not timed)

    start = time.perf_counter()
    path = build_memorizing_model(tmp_path_factory.mktemp("think") / "model", [p[1:] for p in PAIRS])
    return path, time.perf_counter() - start


@pytest.fixture(scope="module")
def tokenizer(reasoning_model: tuple[Path, float]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(reasoning_model[0])


def _prompt_ids(tok: Any, text: str) -> list[int]:
    """As kdeval encodes a rendered prompt: the template wrote BOS, so add no second one."""
    return list(tok.encode(text, add_special_tokens=not text.startswith(BOS)))


@pytest.fixture(scope="module")
def hf_outputs(reasoning_model: tuple[Path, float], tokenizer: Any) -> list[list[int]]:
    """Greedy continuation ids (EOS included) from transformers, one list per prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reasoning_model[0], dtype=torch.float32).eval()
    outs = []
    with torch.no_grad():
        for _, prompt, _ in PAIRS:
            ids = _prompt_ids(tokenizer, prompt)
            gen = model.generate(torch.tensor([ids]), max_new_tokens=128, do_sample=False)
            outs.append(gen[0, len(ids) :].tolist())
    return outs


def test_build_time_is_seconds(
    reasoning_model: tuple[Path, float], capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\n[thinking] build_memorizing_model, {len(PAIRS)} pairs: {reasoning_model[1]:.2f} s")
    assert reasoning_model[1] < 60


def test_tokenizer_and_template_look_like_r1_distill(tokenizer: Any) -> None:
    user, prompt, _ = PAIRS[0]
    chat = [{"role": "user", "content": user}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == prompt and prompt.endswith("<|assistant|>\n<think>\n")
    assert THINK_OPEN in tokenizer.chat_template and THINK_CLOSE not in tokenizer.chat_template
    for marker in (THINK_OPEN, THINK_CLOSE):
        ids = tokenizer.encode(marker, add_special_tokens=False)
        assert len(ids) == 1  # one added token...
        assert ids[0] not in tokenizer.all_special_ids  # ...that is not special
        assert tokenizer.decode(ids, skip_special_tokens=True) == marker
    ids = tokenizer.encode(f"a\n{THINK_CLOSE}\nb{tokenizer.eos_token}", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"a\n{THINK_CLOSE}\nb"


def test_transformers_greedy_gives_the_completions(tokenizer: Any, hf_outputs: list[list[int]]) -> None:
    eos = tokenizer.eos_token_id
    for (_, _, completion), out in zip(PAIRS, hf_outputs, strict=True):
        assert out == [*tokenizer.encode(completion, add_special_tokens=False), eos]
        assert tokenizer.decode(out, skip_special_tokens=True) == completion
    closed = [i for i, (_, _, c) in enumerate(PAIRS) if THINK_CLOSE in c]
    assert set(range(len(PAIRS))) - set(closed) == OPEN_ENDED
    assert all("Question:" in c and "\n" in c for _, _, c in PAIRS)


def test_same_pairs_same_model(reasoning_model: tuple[Path, float], tmp_path: Path) -> None:
    again = build_memorizing_model(tmp_path / "again", [p[1:] for p in PAIRS])
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (again / name).read_bytes() == (reasoning_model[0] / name).read_bytes()


def test_unmemorizable_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not memorize"):
        build_memorizing_model(tmp_path / "m", [p[1:] for p in PAIRS[:2]], steps=3)


_VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
path, prompts = sys.argv[1], json.loads(sys.stdin.read())
llm = LLM(model=path, enforce_eager=True, max_model_len=512, dtype="float32", seed=0)
params = SamplingParams(temperature=0.0, max_tokens=128, skip_special_tokens=True)
outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
print("RESULT " + json.dumps([[list(o.outputs[0].token_ids), o.outputs[0].text] for o in outs]))
"""


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_greedy_matches_transformers(
    reasoning_model: tuple[Path, float],
    tokenizer: Any,
    hf_outputs: list[list[int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """vLLM's engine in its own process: same ids as transformers, and the same text."""
    prompts = [_prompt_ids(tokenizer, prompt) for _, prompt, _ in PAIRS]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _VLLM_SCRIPT, str(reasoning_model[0])],
        input=json.dumps(prompts),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line.removeprefix("RESULT "))
    with capsys.disabled():
        print(f"\n[thinking] vLLM run (engine start included): {time.perf_counter() - start:.1f} s")
    for (_, _, completion), hf_ids, (ids, text) in zip(PAIRS, hf_outputs, got, strict=True):
        assert ids == hf_ids  # EOS included in both
        assert text == completion
