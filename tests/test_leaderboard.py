"""The markdown leaderboard: deduplication, newest-run-wins, ordering, columns, stable output."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kdeval.config import ModelSpec, RunSpec
from kdeval.errors import UserError
from kdeval.gate.cli import main
from kdeval.report.formats import portable_path
from kdeval.report.leaderboard import build, ranked, render
from kdeval.runs import load_run
from tests.fakes_gate import checkpoint, gate_catalog, run_compare


def _edit(path: Path, **changes: Any) -> Path:
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lb")
    teacher, baseline = checkpoint(root, "teacher", 0.0), checkpoint(root, "baseline", 0.5, seed=1)
    old = root / "old"
    run_compare(
        old, {"teacher": teacher, "baseline": baseline, "distilled": checkpoint(root, "d1", 0.1, seed=2)}
    )
    new = root / "new"
    run_compare(new, {"teacher": teacher, "distilled": checkpoint(root, "d2", 0.3, seed=3)})
    return {
        "old": _edit(old / "results.json", created_at="2026-01-05T10:00:00+00:00"),
        "new": _edit(new / "results.json", created_at="2026-02-07T10:00:00+00:00", commit="abc1234"),
        "root": root,
    }


def _board(*paths: Path, sort: str = "overall", keep: str = "newest") -> str:
    return render(build([load_run(p) for p in paths], keep), sort, keep)  # type: ignore[arg-type]


def _rows(text: str) -> list[list[str]]:
    table = [ln for ln in text.splitlines() if ln.startswith("| ")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in table]


def test_one_row_per_fingerprint_and_ranked_by_overall(runs: dict[str, Path]) -> None:
    rows = _rows(_board(runs["old"], runs["new"]))
    assert [r[1] for r in rows] == ["teacher", "distilled", "distilled", "baseline"]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    # paths as portable_path shows them: under the temporary folder, "<tmp>/..."
    assert [r[2] for r in rows][1:3] == [
        f"`{portable_path(str(runs['root']))}/ckpt/{d}`" for d in ("d1", "d2")
    ]


def test_newest_run_wins_unless_told_otherwise(runs: dict[str, Path]) -> None:
    teacher = _rows(_board(runs["old"], runs["new"]))[0]
    assert teacher[1] == "teacher" and teacher[-3:-1] == ["2026-02-07", "[2]"]
    assert _rows(_board(runs["new"], runs["old"]))[0] == teacher  # argument order does not matter
    last = _rows(_board(runs["new"], runs["old"], keep="last"))[0]
    assert last[-3] == "2026-01-05"


def test_output_is_stable_and_fixed_format(runs: dict[str, Path]) -> None:
    text = _board(runs["old"], runs["new"])
    assert text == _board(runs["new"], runs["old"])
    lines = text.splitlines()
    header = lines.index(next(ln for ln in lines if ln.startswith("| rank")))
    assert lines[header] == (
        "| rank | model | checkpoint | parameters | chat | math | qa | overall | retention | date | run "
        "| fingerprint |"
    )
    assert (
        lines[header + 1]
        == "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"
    )
    for row in _rows(text):
        assert all(re.fullmatch(r"\d+\.\d|—", c) for c in row[4:8]), row
        assert re.fullmatch(r"\d+\.\d%|—", row[8]) and re.fullmatch(r"`[0-9a-f]{12}`", row[11])
    assert "[2] 2026-02-07T10:00:00+00:00 · kdeval 0.1.0 · commit `abc1234` · `kdeval compare" in text
    assert "generated" not in text.lower()  # no timestamp of its own: a re-render diffs empty


def test_retention_against_the_same_runs_teacher(runs: dict[str, Path]) -> None:
    rows = {r[2]: r for r in _rows(_board(runs["old"], runs["new"]))}
    teacher = next(r for r in rows.values() if r[1] == "teacher")
    assert teacher[8] == "—"
    d1 = rows[f"`{portable_path(str(runs['root']))}/ckpt/d1`"]
    assert float(d1[8].rstrip("%")) == pytest.approx(float(d1[7]), abs=0.11)  # the teacher scores 100


@pytest.mark.parametrize(
    ("key", "column"), [("qa", None), ("f1", "f1"), ("gate_chat.bleu", "gate_chat.bleu")]
)
def test_sort_keys(runs: dict[str, Path], key: str, column: str | None) -> None:
    text = _board(runs["old"], runs["new"], sort=key)
    assert text.startswith(f"# kdeval leaderboard\n\nRanked by {key} (highest first)")
    assert (f"| {column} |" in text) == (column is not None)
    values = [r for r in _rows(text)]
    head = next(ln for ln in text.splitlines() if ln.startswith("| rank")).strip("|").split("|")
    idx = [h.strip() for h in head].index(column or key)
    numbers = [float(r[idx]) for r in values]
    assert numbers == sorted(numbers, reverse=True)


def test_unknown_sort_key(runs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="nothing to sort by 'nli'.*a family \\(chat, math, qa\\)"):
        _board(runs["old"], sort="nli")


def test_ties_share_a_rank_and_break_by_name(runs: dict[str, Path]) -> None:
    root = runs["root"]
    twin = root / "twin"
    spec = RunSpec(
        models=[
            ModelSpec(name="zeta", path=checkpoint(root, "z", 0.1, seed=2, n_params=7)),
            ModelSpec(name="alpha", path=checkpoint(root, "a", 0.1, seed=2, n_params=8)),
        ],
        out=twin,
    )
    from kdeval.compare import compare
    from tests.fakes_gate import RateBackend

    compare(
        spec, gate_catalog(), argv=["t"], log=lambda m: None, make_backend=lambda s, m: RateBackend(m.path)
    )
    ordered = ranked(build([load_run(twin / "results.json")]))
    assert [(rank, row.name) for rank, row in ordered] == [(1, "alpha"), (1, "zeta")]


def test_latency_and_memory_columns_only_when_measured(runs: dict[str, Path], tmp_path: Path) -> None:
    assert "latency" not in _board(runs["old"])
    raw = json.loads(runs["old"].read_text())
    raw["efficiency"] = {
        "teacher": {"latency_ms": {"p50": 90.0}, "memory_mib": {"peak": 4096}},
        "distilled": {"latency_ms": {"p50": 12.5}, "memory_mib": {"peak": 512}},
    }
    (tmp_path / "samples").symlink_to(runs["old"].parent / "samples")
    measured = tmp_path / "results.json"
    measured.write_text(json.dumps(raw))
    text = _board(measured, sort="latency.p50")
    assert "Ranked by latency.p50 (lowest first)" in text
    rows = _rows(text)
    assert [r[1] for r in rows] == ["distilled", "teacher", "baseline"]
    assert [r[-5:-3] for r in rows] == [["12.5", "512"], ["90.0", "4096"], ["—", "—"]]
    assert rows[2][0] == "—"  # no figure, no rank


def test_cli_writes_the_file(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "LEADERBOARD.md"
    assert main(["leaderboard", str(runs["old"]), str(runs["new"]), "--out", str(out)]) == 0
    assert out.read_text() == _board(runs["old"], runs["new"])
    assert "wrote" in capsys.readouterr().err
    assert main(["leaderboard", str(tmp_path / "missing.json")]) == 2
    assert "results file not found" in capsys.readouterr().err
