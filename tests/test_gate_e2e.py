"""Planted regressions on real tiny models: students trained on nli_synth's training split with
the distillation trainer, evaluated by `kdeval compare` (hf backend), judged by `kdeval gate`.

Measured on this setup (kdeval.tinymodels Llama, 64 wide, 2 layers; sft, lr 3e-3, batch 16,
one CPU thread), nli_synth accuracy on the first 200 test examples after N optimizer steps:
25 -> 33% (chance), 40 -> 43-48%, 100 -> 63%, 150 -> 62-68% (3 seeds), 500 -> 71%. So the
good student gets 150 steps (~6 s) and the degraded one 40: some 20 points worse, far beyond
noise at n = 200, and still a model that learned something (not a broken checkpoint).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdeval.cli import main
from kdeval.gate.rules import parse_rule
from kdeval.gate.run import Options, Outcome, gate

pytestmark = pytest.mark.slow

GOOD_STEPS, DEGRADED_STEPS = 150, 40
LIMIT = 200  # one example is 0.5 points
SMALL_RULE = "nli_synth.accuracy:-0.25pt"  # tighter than one example, so any net drop exceeds it


def _training_file(path: Path) -> Path:
    """prompt/response JSONL from the task's own request and the gold choice's continuation."""
    from kdeval.plugins import load_catalog
    from kdeval_suites.nli.tasks import CHOICES, LABELS

    task = load_catalog().tasks["nli_synth"]
    assert task.train_path is not None
    with path.open("w", encoding="utf-8") as fh:
        for ex in task.load(task.train_path):
            messages = [{"role": m.role, "content": m.content} for m in task.request(ex, []).messages]
            response = CHOICES[LABELS.index(ex.data["label"])]
            fh.write(json.dumps({"id": ex.id, "messages": messages, "response": response}) + "\n")
    return path


def _train(init: Path, data: Path, out: Path, steps: int) -> Path:
    from kdeval.distill import make_config, train

    # epochs is only an upper bound: max_steps ends training (150 steps < one epoch of 3000)
    values = {"student": str(init), "train": str(data), "out": str(out), "method": "sft", "lr": 3e-3}
    values.update(batch_size=16, grad_accum=1, epochs=5, max_steps=steps, max_len=128, warmup_ratio=0.05)
    train(make_config({**values, "checkpoint_every": 0}), progress=False)
    return out


@pytest.fixture(scope="session")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    from kdeval.tinymodels import build_tiny_model

    torch.set_num_threads(1)  # the machine's other cores are someone else's timing runs
    root = tmp_path_factory.mktemp("e2e_students")
    data, init = _training_file(root / "train.jsonl"), build_tiny_model(root / "init", seed=0)
    return {
        "good": _train(init, data, root / "good", GOOD_STEPS),
        "degraded": _train(init, data, root / "degraded", DEGRADED_STEPS),
    }


def _compare(model: Path, out: Path) -> Path:
    """`kdeval compare` exactly as a user types it."""
    argv = ["compare", "--distilled", str(model), "--backend", "hf", "--no-efficiency"]
    argv += ["--task", "nli_synth", "--limit", str(LIMIT), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out / "results.json"


@pytest.fixture(scope="session")
def e2e_runs(students: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e_runs")
    return {
        "good": _compare(students["good"], root / "good"),
        "rerun": _compare(students["good"], root / "rerun"),  # a fresh run of the same model
        "degraded": _compare(students["degraded"], root / "degraded"),
    }


def _accuracy(results: Path) -> float:
    raw = json.loads(results.read_text())
    return next(float(s["value"]) for s in raw["scores"] if s["metric"] == "accuracy")


def _gate_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["gate", *argv])
    out, err = capsys.readouterr()
    return code, out + err


def test_degraded_student_fails_the_gate(
    e2e_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    good, degraded = _accuracy(e2e_runs["good"]), _accuracy(e2e_runs["degraded"])
    assert good >= 55 and degraded <= good - 10, (good, degraded)  # the plant took
    base, cand = str(e2e_runs["good"]), str(e2e_runs["degraded"])
    code, out = _gate_cli(capsys, "--baseline", base, "--candidate", cand, "--rule", "nli.accuracy:-1pt")
    assert code == 1 and "FAIL    nli.accuracy:-1pt" in out and "McNemar exact" in out, out
    (o,) = gate(e2e_runs["good"], e2e_runs["degraded"], [parse_rule("nli.accuracy:-1pt")], Options()).outcomes
    assert o.p_value is not None and o.p_value < 1e-6
    assert o.high is not None and o.high < -1  # the whole interval is a drop beyond the tolerance


def test_rerun_of_the_same_model_passes(
    e2e_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, cand = str(e2e_runs["good"]), str(e2e_runs["rerun"])
    code, out = _gate_cli(capsys, "--baseline", base, "--candidate", cand, "--rule", "nli.accuracy:-1pt")
    assert code == 0 and "pass    nli.accuracy:-1pt" in out, out
    (o,) = gate(e2e_runs["good"], e2e_runs["rerun"], [parse_rule("nli.accuracy:-1pt")], Options()).outcomes
    assert o.effect == 0.0 and o.p_value == 1.0  # greedy scoring on CPU: the same answers


def _perturbed(model: Path, out: Path, seed: int) -> Path:
    """The model with weight noise of 1% of each tensor's spread: a few answers flip."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(model, out, ignore=shutil.ignore_patterns("*.safetensors", "checkpoint*"))
    net = AutoModelForCausalLM.from_pretrained(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std() * 0.01)
    net.save_pretrained(out, safe_serialization=True)
    return out


def _small_drop(students: dict[str, Path], good_run: Path, root: Path) -> tuple[Path, Path, Outcome]:
    """(baseline, candidate): two real runs a few examples apart, the candidate the worse one.

    Noise flips answers both ways, so whichever of the pair is worse becomes the candidate; a
    seed whose difference is zero or already significant is skipped (measured: seeds 0-2 give
    3/0, 4/2 and 7/6 worse/better examples)."""
    rule = [parse_rule(SMALL_RULE)]
    for seed in range(6):
        run = _compare(_perturbed(students["good"], root / f"noisy{seed}", seed), root / f"run{seed}")
        for base, cand in ((good_run, run), (run, good_run)):
            (o,) = gate(base, cand, rule, Options()).outcomes
            if o.effect is not None and o.effect < 0 and o.p_value is not None and o.p_value > 0.05:
                return base, cand, o
    pytest.fail("no noise seed gave a small, non-significant difference")


def test_small_drop_below_significance_passes_unless_strict(
    students: dict[str, Path],
    e2e_runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, cand, o = _small_drop(students, e2e_runs["good"], tmp_path)
    assert o.effect is not None and o.effect <= -0.5  # at least one example worse: beyond 0.25pt
    argv = ["--baseline", str(base), "--candidate", str(cand), "--rule", SMALL_RULE]
    code, out = _gate_cli(capsys, *argv)
    assert code == 0 and "--strict would fail it" in out, out
    code, out = _gate_cli(capsys, *argv, "--strict")
    assert code == 1 and "but --strict fails it" in out, out


def _gate_yaml(path: Path, model: Path, baseline: Path, out: Path) -> Path:
    path.write_text(
        f"""rules:
  - nli.accuracy:-1pt
baseline_results: {baseline}
compare:
  models:
    distilled: {model}
  tasks: [nli_synth]
  backend: hf
  limit: {LIMIT}
  efficiency: false
  out: {out}
"""
    )
    return path


def test_one_gate_step_runs_compare_from_the_config(
    students: dict[str, Path],
    e2e_runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    md = tmp_path / "gate.md"
    worse = _gate_yaml(tmp_path / "worse.yaml", students["degraded"], e2e_runs["good"], tmp_path / "w")
    code, out = _gate_cli(capsys, "--config", str(worse), "--summary-md", str(md))
    assert code == 1 and "FAIL    nli.accuracy:-1pt" in out and "❌ regression" in md.read_text(), out
    assert _accuracy(tmp_path / "w" / "results.json") == _accuracy(e2e_runs["degraded"])
    same = _gate_yaml(tmp_path / "same.yaml", students["good"], e2e_runs["good"], tmp_path / "s")
    code, out = _gate_cli(capsys, "--config", str(same), "--summary-md", str(md))
    assert code == 0 and "✅ passed" in md.read_text(), out
