"""The trainer on tiny real models: output directory, resume, accumulation, top-k cache, vocab guard."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from kdeval.distill import DistillConfig, is_complete, load_config, make_config, train
from kdeval.distill.data import read_records, tokenize
from kdeval.distill.setup import prepare
from kdeval.distill.trainer import accumulate
from kdeval.errors import UserError
from kdeval.tinymodels import build_tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny matrices gain nothing from a second thread, and on a shared 2-core machine the two
    # threads wait on each other: one thread runs these tests several times faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PAIRS = [(f"What is {a} plus {b}?", f" {a + b}") for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (6, 3), (4, 4)]]


def _student_from(teacher: Path, path: Path, seed: int, **overrides: Any) -> Path:
    """A different random model with the teacher's tokenizer (building a tokenizer takes seconds)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shutil.copytree(teacher, path)
    config = AutoConfig.from_pretrained(teacher)
    for k, v in overrides.items():
        setattr(config, k, v)
    torch.manual_seed(seed)
    for f in path.glob("*.safetensors"):
        f.unlink()
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    teacher = tiny_model_dir  # the session's tiny Llama (conftest.py); tests only read it
    student = _student_from(
        teacher, root / "student", seed=1, hidden_size=32, head_dim=16, intermediate_size=64
    )
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in PAIRS))
    return {"teacher": teacher, "student": student, "train": data, "root": root}


def _cfg(models: dict[str, Path], out: Path, **kw: Any) -> DistillConfig:
    values = {
        "student": str(models["student"]),
        "teacher": str(models["teacher"]),
        "train": str(models["train"]),
        "out": str(out),
        "lr": 1e-3,
        "batch_size": 2,
        "grad_accum": 1,
        "epochs": 1,
        "max_len": 32,
        **kw,
    }
    return make_config(values)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def test_output_dir_is_a_hf_model_with_log_curve_and_config(models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _cfg(models, tmp_path / "out", valid=str(models["train"]), method="kd", temperature=2.0)
    result = train(cfg, progress=False)
    out = cfg.out_dir
    assert result.steps == 3 and result.tokens > 0 and result.tokens_per_s > 0
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.hidden_size == 32 and len(tok) == model.config.vocab_size
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3]
    assert [r["kind"] for r in log][-1] == "valid"
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert load_config(out / "distill_config.yaml") == cfg
    assert is_complete(cfg) and not (out / "checkpoints").exists()
    with pytest.raises(UserError, match="not empty"):
        train(cfg, progress=False)


def test_training_lowers_the_loss(models: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg(models, tmp_path / "out", method="sft", epochs=8, lr=3e-3)
    train(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (cfg.out_dir / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("method", ["kd", "sft"])
def test_resume_after_a_crash_reaches_the_same_loss_and_weights(
    models: dict[str, Path], tmp_path: Path, method: str
) -> None:
    kw = {
        "method": method,
        "epochs": 2,
        "batch_size": 1,
        "grad_accum": 2,
        "checkpoint_every": 2,
        "warmup_ratio": 0.2,
        "seed": 3,
    }
    full = train(_cfg(models, tmp_path / "full", **kw), progress=False)

    def crash(step: int, loss: float) -> None:
        if step == 3:  # after the checkpoint of step 2: step 3 is lost and must be redone
            raise KeyboardInterrupt

    cfg = _cfg(models, tmp_path / "resumed", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=crash)
    assert (cfg.out_dir / "checkpoints" / "step-00000002.pt").is_file()
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == full.steps == 6
    assert resumed.final_loss == full.final_loss
    a, b = _weights(tmp_path / "full"), _weights(cfg.out_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (cfg.out_dir / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_is_written_when_minutes_pass_and_resumes_exactly(
    models: dict[str, Path], tmp_path: Path
) -> None:
    # No step-count checkpoints: only the clock decides. Each step "takes" 2 minutes, so with
    # checkpoint_minutes 5 the checkpoints fall after steps 4 and 7 (6 minutes after the last).
    kw = {"method": "sft", "epochs": 2, "batch_size": 1, "checkpoint_every": 0, "checkpoint_minutes": 5}
    full = train(_cfg(models, tmp_path / "full", **kw), progress=False)
    now = [0.0]
    written: list[list[str]] = []

    def step_done(step: int, loss: float) -> None:
        written.append(sorted(p.name for p in (cfg.out_dir / "checkpoints").glob("*.pt")))
        now[0] += 120.0
        if step == 8:  # killed after the checkpoint of step 7: step 8 is lost and redone
            raise KeyboardInterrupt

    cfg = _cfg(models, tmp_path / "resumed", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=step_done, clock=lambda: now[0])
    assert written[2] == [] and written[3] == ["step-00000004.pt"] and written[7] == ["step-00000007.pt"]
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.resumed_from == 7 and resumed.steps == full.steps == 12
    assert resumed.final_loss == full.final_loss
    a, b = _weights(tmp_path / "full"), _weights(cfg.out_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_time_checkpoint_while_the_clock_stands_still_or_when_off(
    models: dict[str, Path], tmp_path: Path
) -> None:
    def crash(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    for minutes, clock in ((5.0, lambda: 0.0), (0.0, iter(range(0, 10**6, 3600)).__next__)):
        cfg = _cfg(
            models, tmp_path / f"out{minutes}", method="sft", checkpoint_every=0, checkpoint_minutes=minutes
        )
        with pytest.raises(KeyboardInterrupt):
            train(cfg, progress=False, on_step=crash, clock=clock)
        assert not (cfg.out_dir / "checkpoints").exists()
    assert DistillConfig.model_fields["checkpoint_minutes"].default == 5.0  # bounded loss by default


def test_resume_refuses_changed_settings(models: dict[str, Path], tmp_path: Path) -> None:
    cfg = _cfg(models, tmp_path / "out", method="sft", checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=lambda s, loss: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(UserError, match=r"different settings \(lr\)"):
        train(cfg.model_copy(update={"lr": 0.1}), resume=True, progress=False)


def test_gradient_accumulation_matches_one_big_batch(models: dict[str, Path], tmp_path: Path) -> None:
    run = prepare(_cfg(models, tmp_path / "out", method="kd", temperature=2.0, chunk_size=3), progress=False)
    grads = []
    for micro in ([[0, 1]], [[0], [1]]):
        run.student.zero_grad()
        sums, n = accumulate(run, micro)
        grads.append([p.grad.clone() for p in run.student.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _first_loss(cfg: DistillConfig) -> float:
    train(cfg, progress=False)
    return float(json.loads((cfg.out_dir / "train_log.jsonl").read_text().splitlines()[0])["loss"])


@pytest.mark.parametrize("method", ["kd", "jsd"])
def test_topk_cache_with_full_vocab_equals_dense_teacher(
    models: dict[str, Path], tmp_path: Path, method: str
) -> None:
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(models["teacher"]))
    kw = {"method": method, "max_steps": 1, "temperature": 1.5}
    dense = _first_loss(_cfg(models, tmp_path / "dense", **kw))
    cached = _first_loss(_cfg(models, tmp_path / "topk", topk=vocab, **kw))
    assert cached == pytest.approx(dense, rel=1e-5)


def test_topk_cache_is_written_once_and_reused(models: dict[str, Path], tmp_path: Path) -> None:
    shared = tmp_path / "cache"
    cfg = _cfg(models, tmp_path / "a", method="kd", topk=8, topk_cache=str(shared))
    first = _first_loss(cfg)
    meta = (shared / "meta.json").stat().st_mtime_ns
    again = _first_loss(cfg.model_copy(update={"out": str(tmp_path / "b")}))
    assert again == first and (shared / "meta.json").stat().st_mtime_ns == meta
    other = cfg.model_copy(update={"out": str(tmp_path / "c"), "topk": 4})
    _first_loss(other)  # another k rebuilds the cache rather than reading a wrong one
    assert json.loads((shared / "meta.json").read_text())["identity"]["k"] == 4


def test_padded_teacher_rows_are_trimmed(models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    padded = models["root"] / "teacher_padded"
    if not padded.exists():
        shutil.copytree(models["teacher"], padded)
        model = AutoModelForCausalLM.from_pretrained(models["teacher"])
        model.resize_token_embeddings(640, mean_resizing=False)  # 597 real tokens + padding rows
        with torch.no_grad():
            model.get_output_embeddings().weight[597:] = 50.0  # would dominate if not cut
        model.save_pretrained(padded)
    kw = {"method": "kd", "max_steps": 1}
    plain = _first_loss(_cfg(models, tmp_path / "plain", **kw))
    trimmed = _first_loss(_cfg(models, tmp_path / "padded", teacher=str(padded), **kw))
    assert trimmed == pytest.approx(plain, rel=1e-6)


def test_real_vocab_mismatch_stops_before_training(models: dict[str, Path], tmp_path: Path) -> None:
    other = models["root"] / "teacher_other_vocab"
    if not other.exists():
        build_tiny_model(other, seed=0, vocab_size=400)
    cfg = _cfg(models, tmp_path / "out", teacher=str(other), method="kd")
    with pytest.raises(UserError, match="tokenizers differ") as err:
        train(cfg, progress=False)
    assert "\n" not in str(err.value) and "seqkd" in str(err.value)
    assert not (cfg.out_dir / "model.safetensors").exists()


def test_config_errors_are_one_line_user_errors(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown setting 'tempreature'"):
        _cfg(models, tmp_path, tempreature=2.0)
    with pytest.raises(UserError, match="needs a teacher"):
        _cfg(models, tmp_path, teacher=None, method="kd")
    bad = tmp_path / "d.yaml"
    bad.write_text("method: kd\nalpha: [1\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_config(bad)


def test_data_errors_name_the_line_and_responses_are_required(
    models: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:2: record 'L2' has no 'response'"):
        train(_cfg(models, tmp_path / "out", train=str(data), method="sft"), progress=False)
    data.write_text('{"text": "a"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:1: record has neither"):
        read_records(data)


def test_chat_template_renders_prompts_as_evaluation_does(tmp_path: Path) -> None:
    from kdeval.backends.prompting import PromptCodec
    from kdeval.distill.data import PromptRecord
    from kdeval.tasks import user_turn

    path = build_tiny_model(tmp_path / "chat", chat_template=True)
    codec = PromptCodec.from_pretrained(str(path))
    record = PromptRecord("x", user_turn("Is fire cold?"), " no", "mem")
    (ex,) = tokenize([record], codec, max_len=64)
    prompt = codec.tokenizer.decode(list(ex.input_ids[: ex.n_prompt]))
    assert prompt == "<s><|user|>\nIs fire cold?\n<|assistant|>\n"
    assert list(ex.input_ids[: ex.n_prompt]) == codec.encode_text(codec.render(record.messages))
    assert ex.input_ids[-1] == codec.tokenizer.eos_token_id


def test_seqkd_generates_teacher_answers_once_and_trains_on_them(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _ in PAIRS))
    cache = tmp_path / "answers.jsonl"
    kw = {
        "train": str(prompts),
        "method": "seqkd",
        "teacher_max_tokens": 6,
        "teacher_backend": "hf",
        "teacher_responses": str(cache),
    }
    train(_cfg(models, tmp_path / "a", **kw), progress=False)
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == len(PAIRS) and all(isinstance(r["response"], str) for r in rows)

    def no_backend(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached answers must be reused")

    monkeypatch.setattr("kdeval.backends.load_backend", no_backend)
    train(_cfg(models, tmp_path / "b", **kw), progress=False)
    assert len(cache.read_text().splitlines()) == len(PAIRS)


_CHILD = """
import sys, time
from kdeval.distill import load_config, train
cfg = load_config(None, {k: v for k, v in (a.split("=", 1) for a in sys.argv[1:])})
train(cfg, progress=False, on_step=lambda step, loss: time.sleep(0.3))
"""


@pytest.mark.slow
def test_resume_after_kill_9(models: dict[str, Path], tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    kw = {"method": "kd", "epochs": 3, "batch_size": 1, "grad_accum": 1, "checkpoint_every": 2}
    full = train(_cfg(models, tmp_path / "full", **kw), progress=False)
    cfg = _cfg(models, tmp_path / "killed", **kw)
    args = [f"{k}={v}" for k, v in cfg.model_dump().items() if v not in (None, {})]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same float reductions
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], cwd=Path(__file__).parent.parent, env=env)
    deadline = time.monotonic() + 120
    while not (cfg.out_dir / "checkpoints" / "step-00000004.pt").exists():
        assert child.poll() is None and time.monotonic() < deadline, "child ended before its checkpoint"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    resumed = train(cfg, resume=True, progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from >= 4
    assert resumed.final_loss == full.final_loss
    a, b = _weights(tmp_path / "full"), _weights(cfg.out_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distill_command_flags_override_the_yaml(models: dict[str, Path], tmp_path: Path) -> None:
    import argparse

    from kdeval.distill.cli import add_parsers, config_from_args, run

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    yaml_file = tmp_path / "distill.yaml"
    yaml_file.write_text(f"method: jsd\nbeta: 0.2\nepochs: 5\nstudent: {models['student']}\n")
    argv = [
        "distill",
        "--config",
        str(yaml_file),
        "--teacher",
        str(models["teacher"]),
        "--train",
        str(models["train"]),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--max-len",
        "32",
    ]
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    assert (cfg.method, cfg.beta, cfg.epochs, cfg.lr, cfg.grad_accum) == ("jsd", 0.2, 1, 2e-5, 8)
    assert run(args) == 0 and (tmp_path / "out" / "model.safetensors").is_file()
    with pytest.raises(UserError, match="missing 'student'; pass --student"):
        config_from_args(parser.parse_args(["distill", "--train", "x", "--out", "y", "--method", "sft"]))


def test_topk_cache_rows_are_the_same_across_shards(models: dict[str, Path], tmp_path: Path) -> None:
    from kdeval.backends.prompting import PromptCodec
    from kdeval.distill.models import load_model
    from kdeval.distill.topk import build_cache

    codec = PromptCodec.from_pretrained(str(models["teacher"]))
    examples = tokenize(read_records(models["train"]), codec, 32)
    teacher = load_model(str(models["teacher"]))
    identity = {"k": 5, "temperature": 2.0, "vocab": len(codec.tokenizer)}
    one = build_cache(teacher, examples, tmp_path / "one", identity, pad_id=codec.pad_id, batch_size=4)
    many = build_cache(teacher, examples, tmp_path / "many", identity, pad_id=codec.pad_id, shard_examples=2)
    assert len(one) == len(many) == len(examples) and len(many.meta["shards"]) == 3
    for i, e in enumerate(examples):
        (ia, la), (ib, lb) = one.rows(i), many.rows(i)
        assert ia.shape == (e.n_response, 5) and lb.shape == (e.n_response, 6)
        assert torch.equal(ia, ib)
        torch.testing.assert_close(la, lb)


def test_a_topk_cache_build_that_dies_keeps_its_finished_shards(tmp_path: Path) -> None:
    from kdeval.distill.topk import META, write_cache

    calls: list[int] = []

    def rows_of(first: int, last: int, fail_at: int | None = None) -> tuple[torch.Tensor, ...]:
        calls.append(first)
        if first == fail_at:
            raise RuntimeError("killed")
        n = last - first  # one token row per example
        rows = torch.arange(first, last, dtype=torch.float32)[:, None].expand(n, 3).contiguous()
        return torch.zeros(n, 2, dtype=torch.int32), rows, torch.arange(n + 1, dtype=torch.int64)

    identity = {"k": 2, "teacher": "t"}
    with pytest.raises(RuntimeError, match="killed"):
        write_cache(tmp_path, identity, 10, lambda a, b: rows_of(a, b, fail_at=4), shard_examples=2)
    assert calls == [0, 2, 4] and not (tmp_path / META).exists()  # incomplete: no meta
    calls.clear()
    cache = write_cache(tmp_path, identity, 10, rows_of, shard_examples=2)
    assert calls == [4, 6, 8]  # the two finished shards were kept
    assert [float(cache.rows(i)[1][0, 0]) for i in range(10)] == [float(i) for i in range(10)]
    calls.clear()
    write_cache(tmp_path, {**identity, "teacher": "other"}, 10, rows_of, shard_examples=2)
    assert calls == [0, 2, 4, 6, 8]  # another teacher's shards are not reused
