"""`--samples 8` on a real backend, killed with SIGKILL half-way and resumed: identical results to
an uninterrupted run, and not one completed sample computed twice."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.killing import kill_9_after

ARGS = [
    *("--backend", "hf", "--task", "math_synth", "--limit", "6", "--samples", "8"),
    *("--temperature", "0.8", "--top-p", "0.95", "--max-tokens", "24", "--no-efficiency"),
]


def _stored(out: Path) -> dict[tuple[str, str, str], str]:
    with sqlite3.connect(out / "store.sqlite") as db:
        rows = db.execute("SELECT key, model, example_id, output FROM outputs").fetchall()
    return {(k, m, e): o for k, m, e, o in rows}


@pytest.mark.slow
def test_kill_9_half_way_through_the_samples_then_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kdeval.cli", "compare", "--model", f"m={tiny_model_dir}", *ARGS]
    out = tmp_path / "killed"
    kill_9_after([*cmd, "--out", str(out)], out, 20)
    before = _stored(out)
    assert 20 <= len(before) < 48 and not (out / "results.json").exists()
    assert any("#" in e for _, _, e in before)  # samples after the first are stored as themselves

    resumed = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(before)} of 48 requests reused from the store, {48 - len(before)} to run" in resumed.stderr
    after = _stored(out)
    assert len(after) == 48 and all(after[k] == v for k, v in before.items())

    fresh = subprocess.run(
        [*cmd, "--out", str(tmp_path / "fresh")], capture_output=True, text=True, timeout=900
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    a = json.loads((out / "results.json").read_text())
    b = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert a["scores"] == b["scores"] and a["generation"] == b["generation"]
    assert {s["metric"] for s in a["scores"]} == {"accuracy", "pass@2", "pass@4", "pass@8", "maj@8"}
    # each sample is seeded on its own: the killed run's batches differed, its samples did not
    texts = {json.loads(o)["text"] for o in after.values()}
    assert len(texts) > 6  # the samples differ from each other
    assert sorted(json.loads(o)["text"] for o in after.values()) == sorted(
        json.loads(o)["text"] for o in _stored(tmp_path / "fresh").values()
    )
