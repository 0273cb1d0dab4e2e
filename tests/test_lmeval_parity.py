"""lm-eval tasks through kdeval equal lm_eval.simple_evaluate with lm-eval's own `hf` model on the
same tiny model: greedy generations and choices identical, log-likelihoods within 1e-6 (relative:
float32 sums over differently padded batches), every metric lm-eval's own (means on kdeval's 0-100)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lmeval_tasks import write_tasks

pytest.importorskip("lm_eval")

TASKS = ["kd_mc", "kd_gen", "kd_ppl"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("lmeval") / "tasks")


def _lm_eval(model: Path, task_dir: Path) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    os.environ.update(OFFLINE)
    return simple_evaluate(  # type: ignore[no-any-return]
        model="hf",
        model_args=f"pretrained={model},dtype=float32",
        tasks=TASKS,
        task_manager=TaskManager(include_path=str(task_dir)),
        device="cpu",
        batch_size=16,
        log_samples=True,
    )


def _kdeval(model: Path, task_dir: Path, out: Path, backend: str) -> subprocess.CompletedProcess[str]:
    tasks = [a for t in TASKS for a in ("--lm-eval-task", t)]
    cmd = [sys.executable, "-m", "kdeval.cli", "compare", "--model", f"m={model}", "--backend", backend]
    cmd += [*tasks, "--lm-eval-include", str(task_dir), "--no-efficiency", "--quiet", "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, **OFFLINE})


def _stored(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    with sqlite3.connect(out / "store.sqlite") as db:
        rows = db.execute("SELECT task, example_id, output FROM outputs").fetchall()
    return {(t, e): json.loads(o) for t, e, o in rows}


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, task_dir: Path) -> dict[str, Any]:
    return _lm_eval(tiny_model_dir, task_dir)


def _check(ref: dict[str, Any], out: Path, rel: float) -> None:
    """kdeval's run in `out` against lm-eval's results: metrics, then every document's responses."""
    results = json.loads((out / "results.json").read_text())
    ours = {(s["task"], s["metric"]): s["value"] for s in results["scores"]}
    for task in TASKS:
        for key, value in ref["results"][task].items():
            if "," not in key or "stderr" in key:
                continue
            scale = 100.0 if not any(p in key for p in ("perplexity", "bits_per_byte")) else 1.0
            assert ours[(task, key)] == pytest.approx(scale * value, rel=rel, abs=1e-9), (task, key)

    stored = _stored(out)
    for task in TASKS:
        for sample in ref["samples"][task]:
            got = stored[(task, str(sample["doc_id"]))]
            resps = [r[0] for r in sample["resps"]]
            if task == "kd_gen":  # greedy generations identical, so filtered answers too
                assert got["text"] == resps[0]
                continue
            lls = [r[0] if isinstance(r, (list, tuple)) else r for r in resps]
            assert got["choice_logprobs"] == pytest.approx(lls, rel=rel, abs=rel)
            if task == "kd_mc":
                assert got["choice_greedy"] == [bool(r[1]) for r in resps]


@pytest.mark.slow
def test_parity_with_lm_eval_hf(
    tiny_model_dir: Path, task_dir: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    run = _kdeval(tiny_model_dir, task_dir, tmp_path / "run", "hf")
    assert run.returncode == 0, run.stderr[-3000:]
    _check(reference, tmp_path / "run", 1e-6)


@pytest.mark.slow
def test_vllm_backend_matches_lm_eval_hf(
    tiny_model_dir: Path, task_dir: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    """The same through kdeval's vLLM backend: generations identical; vLLM's float32 kernels are not
    transformers', so log-likelihoods agree to 1e-5 (README)."""
    pytest.importorskip("vllm")
    run = _kdeval(tiny_model_dir, task_dir, tmp_path / "run", "vllm")
    assert run.returncode == 0, run.stderr[-3000:]
    _check(reference, tmp_path / "run", 1e-5)
