"""results.json as a typed, checked model: a real file reads and writes back byte for byte, and a
broken one is one line naming the file and the field, exit 2, in `kdeval report`, `kdeval gate`
and `kdeval leaderboard` alike. Also: sample paths stay inside the run folder, and the leaderboard
does not rank runs that cannot be compared."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kdeval.config import ModelSpec, RunSpec
from kdeval.errors import UserError
from kdeval.report.leaderboard import build, ranked, render
from kdeval.results import RunResult
from kdeval.runs import load_run, read_results
from tests import test_runner
from tests.fakes import ScriptedBackend
from tests.fakes_gate import checkpoint, run_compare

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: `kdeval compare` with the scripted backend (no models)."""
    tmp = tmp_path_factory.mktemp("run")
    ScriptedBackend.served = []
    test_runner._run(test_runner._spec(tmp, test_runner.ROLES))
    return tmp / "out" / "results.json"


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with the newer optional keys: token budgets and several samples per example."""
    root = tmp_path_factory.mktemp("sampled")
    models = {"teacher": checkpoint(root, "t", 0.0), "distilled": checkpoint(root, "d", 0.2, seed=1)}
    run_compare(root / "run", models, limit=12, max_tokens={"gate_qa": 12}, samples=3, temperature=0.5)
    return root / "run" / "results.json"


def _copy(src: Path, dst: Path, edit: Callable[[dict[str, Any]], object] | None = None) -> Path:
    """The run's results.json in a new folder (its samples beside it), edited."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "samples").symlink_to(src.parent / "samples")
    raw = json.loads(src.read_text())
    if edit is not None:
        edit(raw)
    (dst / "results.json").write_text(json.dumps(raw, indent=2))
    return dst / "results.json"


# --- the round trip ---------------------------------------------------------------------------


def test_a_real_file_reads_and_writes_back_byte_for_byte(run: Path, sampled: Path) -> None:
    for path in (run, sampled):
        written = path.read_text(encoding="utf-8")
        result = read_results(path)
        assert isinstance(result, RunResult)
        assert result.to_json() + "\n" == written
        assert RunResult.model_validate(json.loads(written), strict=True).to_json() + "\n" == written
    task = read_results(sampled).tasks[0]
    assert (task.max_tokens, task.samples) == (12, 3)


def test_typed_entries(run: Path) -> None:
    r = read_results(run)
    assert [m.role for m in r.models] == ["teacher", "baseline", "distilled"]
    assert all(len(m.fingerprint) == 16 and m.computed + m.reused > 0 for m in r.models)
    assert {t.name: t.task_type for t in r.tasks} == {"toy_choice": "multiple_choice", "toy_chat": "generate"}
    assert r.settings.samples == 1 and r.settings.max_tokens == {}  # unset: defaults, not written
    assert {s.scope for s in r.summary} == {"family", "overall"}
    assert r.comparisons and r.generation and r.samples


def test_efficiency_figures_and_backend_facts_keep_their_keys_and_order(run: Path, tmp_path: Path) -> None:
    figures = {
        "device": "cpu: test (2 cores)",
        "backend": "hf",
        "latency_ms": {"mean": 12.0, "p50": 11.5, "p90": 14, "p99": 15.25},
        "memory_mib": {"weights": 10.0, "kv_cache": None, "peak": 512},
        "engine": {"threads": 2, "processes": [{"pid": 1, "name": "python"}]},
        "repeats": {"n": 3, "latency_p50_ms": {"min": 11, "median": 11.5, "max": 12.0}},
        "machine": {"cpu": "x86_64", "cores": 2, "load_average": [0.5, 0.25, 0.0]},
        "warnings": [],
    }

    def edit(raw: dict[str, Any]) -> None:
        raw["efficiency"] = {"teacher": figures, "baseline": {"error": "engine died"}}
        raw["models"][0] = {**raw["models"][0], "host": "http://x", "thinking": ["<think>", "</think>"]}

    path = _copy(run, tmp_path / "x", edit)
    r = read_results(path)
    assert r.to_json() == path.read_text()
    fig = r.efficiency["teacher"]
    assert fig.figure("latency.p90") == 14.0 and fig.number("memory_mib", "kv_cache") is None
    assert fig.machine is not None and fig.machine.cores == 2
    assert r.efficiency["baseline"].error == "engine died"
    assert r.models[0].thinking == ["<think>", "</think>"] and (r.models[0].model_extra or {})["host"]


def test_files_without_the_newer_optional_keys_are_read(run: Path, tmp_path: Path) -> None:
    def edit(raw: dict[str, Any]) -> None:
        del raw["generation"]
        for t in raw["tasks"]:
            t.pop("max_tokens", None)
            t.pop("samples", None)
        raw["settings"].pop("samples", None)
        raw["settings"].pop("max_tokens", None)

    r = read_results(_copy(run, tmp_path / "old", edit))
    assert r.generation == [] and all(t.samples == 1 and t.max_tokens is None for t in r.tasks)


# --- malformed files: one line, exit 2, in every command ----------------------------------------


def _missing(raw: dict[str, Any]) -> None:
    del raw["models"][1]["fingerprint"]


def _wrong_type(raw: dict[str, Any]) -> None:
    raw["scores"][2]["n"] = "five"


def _escaping(raw: dict[str, Any]) -> None:
    raw["samples"]["teacher/toy_chat"] = "../../etc/passwd"


def _absolute(raw: dict[str, Any]) -> None:
    raw["samples"]["teacher/toy_chat"] = "/etc/passwd"


def _unknown_model(raw: dict[str, Any]) -> None:
    raw["scores"][0]["model"] = "nobody"


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], None] | None, str]] = {
    "missing field": (_missing, "models[1].fingerprint: field required"),
    "wrong type": (_wrong_type, 'scores[2].n: expected an integer, got "five"'),
    "escaping samples path": (
        _escaping,
        "samples: teacher/toy_chat: '../../etc/passwd' is not a path inside",
    ),
    "absolute samples path": (_absolute, "samples: teacher/toy_chat: '/etc/passwd' is not a path inside"),
    "unknown model": (_unknown_model, "scores[0].model: 'nobody' is not a model of this run"),
    "not JSON": (None, "malformed JSON"),
}


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *argv], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_broken_file_is_one_line_naming_file_and_field(run: Path, tmp_path: Path, case: str) -> None:
    edit, expected = MALFORMED[case]
    bad = _copy(run, tmp_path / "bad", edit)
    if edit is None:
        bad.write_text('{"schema": "kdeval.results", "models": [\n')
    good = _copy(run, tmp_path / "good")
    commands = {
        "report": ["report", str(bad), "--out", str(tmp_path / "report.md")],
        "gate": ["gate", "--baseline", str(good), "--candidate", str(bad), "--rule", "overall:-1pt"],
        "leaderboard": ["leaderboard", str(good), str(bad)],
    }
    for command, argv in commands.items():
        proc = _cli(*argv)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (command, proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (command, proc.stderr)
        assert lines[0].startswith(f"kdeval: error: {bad}"), (command, lines[0])
        assert expected in lines[0] and lines[0].endswith("; re-run kdeval compare"), (command, lines[0])
        assert proc.stdout == "", command


def test_not_utf8_and_not_a_results_file(run: Path, tmp_path: Path) -> None:
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not UTF-8"):
        read_results(tmp_path / "binary.json")
    (tmp_path / "other.json").write_text('{"schema": "something else"}')
    with pytest.raises(UserError, match="not a kdeval results file"):
        read_results(tmp_path / "other.json")
    assert read_results(run.parent).created_at == read_results(run).created_at  # DIR alone


def test_records_are_read_from_inside_the_run_folder(run: Path) -> None:
    loaded = load_run(run)
    assert len(loaded.records("teacher", "toy_choice")) == 20
    with pytest.raises(UserError, match="per-example samples for nobody/toy_choice are missing"):
        loaded.records("nobody", "toy_choice")


# --- the leaderboard and comparability ----------------------------------------------------------


def test_leaderboard_does_not_rank_runs_that_cannot_be_compared(run: Path, tmp_path: Path) -> None:
    spec = RunSpec(
        models=[ModelSpec(name="other", path=test_runner._model(tmp_path, "good_other"))],
        out=tmp_path / "limited",
        limit=10,
    )
    test_runner._run(spec)
    limited = tmp_path / "limited" / "results.json"
    rows = build([load_run(run), load_run(limited)])
    apart = [r for r in rows if r.differs]
    assert apart and {r.run.path for r in apart} == {run}  # the newest run is the reference
    assert "setting limit 10 vs None" in apart[0].differs
    assert all(rank is None for rank, row in ranked(rows) if row.differs)
    assert [row.differs for _, row in ranked(rows)][-len(apart) :] == [r.differs for r in apart]
    text = render(rows)
    assert "≠ not ranked" in text and "n_examples" in text
    proc = _cli("leaderboard", str(run), str(limited))
    assert proc.returncode == 0 and "| ≠ |" in proc.stdout and "not comparable with run" in proc.stdout


def test_leaderboard_ranks_comparable_runs_together(run: Path, tmp_path: Path) -> None:
    again = _copy(run, tmp_path / "again", lambda raw: raw.update(created_at="2030-01-01T00:00:00+00:00"))
    rows = build([load_run(run), load_run(again)])
    assert rows and not any(r.differs for r in rows) and "≠" not in render(rows)
