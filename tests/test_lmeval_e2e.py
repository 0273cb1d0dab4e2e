"""A compare mixing a kdeval suite and two lm-eval tasks across three models, killed with SIGKILL
and resumed: not one completed request computed twice, and the same results as an uninterrupted
run; an `evaluate` metric from a local module folder sits beside kdeval's own."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.tinymodels import build_tiny_model
from tests.killing import kill_9_after
from tests.lmeval_tasks import write_tasks

pytest.importorskip("lm_eval")
pytest.importorskip("evaluate")

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

# A metric module the way `evaluate` loads one from a folder: FOLDER/FOLDER.py with an evaluate.Metric.
FIRST_CHAR = """\
import datasets
import evaluate


class FirstChar(evaluate.Metric):
    def _info(self):
        features = {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
        return evaluate.MetricInfo(
            description="share of answers whose first character is the reference's", citation="",
            inputs_description="", features=datasets.Features(features),
        )

    def _compute(self, predictions, references):
        same = [p[:1] == r[:1] for p, r in zip(predictions, references)]
        return {"first_char": sum(same) / len(same)}
"""


def write_metric(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{folder.name}.py").write_text(FIRST_CHAR)
    return folder


def _stored(out: Path) -> dict[str, str]:
    with sqlite3.connect(out / "store.sqlite") as db:
        return dict(db.execute("SELECT key, output FROM outputs").fetchall())


@pytest.mark.slow
def test_kill_9_then_resume_a_mixed_run(tiny_model_dir: Path, tiny_model_dir_b: Path, tmp_path: Path) -> None:
    third = build_tiny_model(tmp_path / "third", seed=3)
    tasks = write_tasks(tmp_path / "tasks")
    metric = write_metric(tmp_path / "first_char")
    cmd = [sys.executable, "-m", "kdeval.cli", "compare", "--backend", "hf", "--no-efficiency"]
    cmd += ["--teacher", str(tiny_model_dir), "--baseline", str(tiny_model_dir_b), "--distilled", str(third)]
    cmd += ["--suite", "nli", "--limit", "4", "--lm-eval-include", str(tasks)]
    cmd += ["--lm-eval-task", "kd_mc", "--lm-eval-task", "kd_gen", "--metric", f"kd_gen=evaluate:{metric}"]
    env = {**os.environ, **OFFLINE}
    out = tmp_path / "killed"
    kill_9_after([*cmd, "--out", str(out)], out, 1, env)
    before = _stored(out)
    assert before and not (out / "results.json").exists()

    resumed = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=900, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _stored(out)
    assert len(after) > len(before) and all(after[k] == v for k, v in before.items())
    result = json.loads((out / "results.json").read_text())
    # every request completed before the kill was reused, none computed again
    assert sum(m["reused"] for m in result["models"]) == len(before)
    assert sum(m["computed"] for m in result["models"]) == len(after) - len(before)

    fresh = subprocess.run(
        [*cmd, "--out", str(tmp_path / "fresh")], capture_output=True, text=True, timeout=900, env=env
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    again = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert result["scores"] == again["scores"] and result["comparisons"] == again["comparisons"]
    metrics = {(s["task"], s["metric"]) for s in result["scores"]}
    assert {("kd_mc", "acc,none"), ("kd_gen", "exact_match,first-word"), ("nli_synth", "accuracy")} <= metrics
    assert ("kd_gen", "evaluate:first_char") in metrics
    assert {t["name"]: t["suite"] for t in result["tasks"]}["kd_mc"] == "lm-eval"
    report = (out / "report.md").read_text()
    assert "evaluate:first_char" in report and "acc,none" in report


@pytest.mark.slow
def test_fidelity_runs_on_lm_eval_tasks_perplexity_included(
    tiny_model_dir: Path, tiny_model_dir_b: Path, tmp_path: Path
) -> None:
    """With a teacher, the fidelity phase covers lm-eval's multiple-choice, generation and rolling
    (perplexity) tasks: a student that is the teacher has KL 0 and top-1 100% on each."""
    tasks = write_tasks(tmp_path / "tasks")
    cmd = [sys.executable, "-m", "kdeval.cli", "compare", "--backend", "hf", "--no-efficiency"]
    cmd += ["--teacher", str(tiny_model_dir), "--baseline", str(tiny_model_dir_b)]
    cmd += ["--distilled", str(tiny_model_dir), "--lm-eval-include", str(tasks)]
    cmd += [a for t in ("kd_mc", "kd_gen", "kd_ppl") for a in ("--lm-eval-task", t)]
    env = {**os.environ, **OFFLINE}
    run = subprocess.run(
        [*cmd, "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=900, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["fidelity"]
    per_task = {(r["model"], r["name"], r["measure"]): r["value"] for r in rows if r["scope"] == "task"}
    for task in ("kd_mc", "kd_gen", "kd_ppl"):
        assert per_task[("distilled", task, "kl")] == pytest.approx(0.0, abs=1e-6), task
        assert per_task[("distilled", task, "top1")] == pytest.approx(100.0), task
        assert per_task[("baseline", task, "kl")] > 0.01, task
