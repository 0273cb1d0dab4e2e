"""`kdeval compare` end to end on tiny real models through the real backends and the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdeval.backends import vllm_available

OFFLINE = ["nli_synth", "qa_synth", "math_synth", "summ_synth", "chat_synth"]
needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")


def _kdeval(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _roles(teacher: Path, baseline: Path, distilled: Path) -> list[str]:
    return ["--teacher", str(teacher), "--baseline", str(baseline), "--distilled", str(distilled)]


def _store_outputs(out: Path) -> dict[tuple[str, str, str, int], dict[str, object]]:
    with sqlite3.connect(out / "store.sqlite") as db:
        rows = db.execute("SELECT model, task, example_id, stage, output FROM outputs").fetchall()
    return {(m, t, e, s): json.loads(o) for m, t, e, s, o in rows}


def _value(result: dict[str, list[dict[str, object]]], task: str, metric: str) -> object:
    return next(s["value"] for s in result["scores"] if s["task"] == task and s["metric"] == metric)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_three_models_five_suites_on_vllm(
    tiny_model_dir: Path, tiny_model_dir_b: Path, tiny_chat_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = _kdeval(
        "compare",
        *_roles(tiny_model_dir, tiny_model_dir_b, tiny_chat_model_dir),
        "--backend",
        "vllm",
        "--limit",
        "12",
        "--no-efficiency",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "| family | task | metric | teacher | baseline | distilled | retention | gap closed | agreement |"
        in proc.stdout
    )
    result = json.loads((out / "results.json").read_text())
    assert [t["name"] for t in result["tasks"]] == OFFLINE
    assert {m["name"]: m["chat_template"] for m in result["models"]} == {
        "teacher": False,
        "baseline": False,
        "distilled": True,
    }
    assert all(m["backend"] == "vllm" and m["n_params"] > 100_000 for m in result["models"])
    assert result["settings"]["temperature"] == 0.0 and result["settings"]["seed"] == 0
    for model in ("teacher", "baseline", "distilled"):
        for task in OFFLINE:
            records = [
                json.loads(x) for x in (out / "samples" / model / f"{task}.jsonl").read_text().splitlines()
            ]
            assert len(records) == 12
            assert all(r["prompt"] and r["references"] for r in records)
    chat = json.loads((out / "samples/distilled/chat_synth.jsonl").read_text().splitlines()[0])
    assert len(chat["output"]) == 2 and chat["output"][0] in chat["prompt"][1]  # turn 2 saw its own turn 1
    assert (out / "report.md").read_text() in proc.stdout


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_and_hf_agree(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Same model, both backends: identical multiple-choice accuracy, identical text for identical ids."""
    runs = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / backend
        proc = _kdeval(
            "compare",
            "--model",
            f"m={tiny_model_dir}",
            "--backend",
            backend,
            "--limit",
            "24",
            "--task",
            "nli_synth",
            "--task",
            "qa_synth",
            "--task",
            "chat_synth",
            "--no-efficiency",
            "--out",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[backend] = (json.loads((out / "results.json").read_text()), _store_outputs(out))
    (rv, sv), (rh, sh) = runs["vllm"], runs["hf"]
    assert _value(rv, "nli_synth", "accuracy") == _value(rh, "nli_synth", "accuracy")
    mc = [(k, o) for k, o in sv.items() if k[1] == "nli_synth"]
    assert mc and all(
        sh[k]["choice_logprobs"] == pytest.approx(o["choice_logprobs"], abs=1e-3) for k, o in mc
    )
    gen = [k for k in sv if k[1] != "nli_synth" and k in sh]
    same_ids = [k for k in gen if sv[k]["token_ids"] == sh[k]["token_ids"]]
    assert len(same_ids) >= 0.8 * len(gen), f"only {len(same_ids)} of {len(gen)} generations have equal ids"
    assert all(sv[k]["text"] == sh[k]["text"] for k in same_ids)


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(
    tiny_model_dir: Path, tiny_model_dir_b: Path, tiny_chat_model_dir: Path, tmp_path: Path
) -> None:
    args = [
        "compare",
        *_roles(tiny_model_dir, tiny_model_dir_b, tiny_chat_model_dir),
        "--backend",
        "hf",
        "--limit",
        "12",
        "--batch-size",
        "4",
        *("--task", "nli_synth", "--task", "qa_synth", "--task", "chat_synth"),
        "--no-efficiency",
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdeval.cli", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stored = 0
    deadline = time.time() + 600
    while stored < 60 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
        if (out / "store.sqlite").exists():
            with contextlib.suppress(sqlite3.OperationalError):  # the store may be mid-creation
                stored = len(_store_outputs(out))
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    before = _store_outputs(out)
    resumed = _kdeval(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reused = sum(
        int(line.split(": ")[2].split(" of ")[0])
        for line in resumed.stderr.splitlines()
        if "reused from the store" in line
    )
    assert reused >= len(before) > 0
    after = _store_outputs(out)
    assert all(after[k] == v for k, v in before.items())  # nothing completed was recomputed or lost

    fresh = _kdeval(*args, "--out", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    a = json.loads((out / "results.json").read_text())
    b = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert (
        a["scores"] == b["scores"]
        and a["agreement"] == b["agreement"]
        and a["comparisons"] == b["comparisons"]
    )
