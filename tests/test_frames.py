"""Runs as pandas DataFrames (kdeval.frames) and `kdeval export`, on scripted runs (no models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.cli import main
from kdeval.errors import UserError
from tests.fakes_gate import checkpoint, run_compare

pd = pytest.importorskip("pandas")

from kdeval.frames import leaderboard_frame, samples_frame, scores_frame  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("frames")
    teacher, student = checkpoint(root, "teacher", 0.0), checkpoint(root, "student", 0.3, seed=2)
    run_compare(root / "a", {"teacher": teacher, "distilled": student}, limit=20)
    run_compare(root / "b", {"distilled": checkpoint(root, "other", 0.6, seed=3)}, limit=20)
    return {"a": root / "a" / "results.json", "b": root / "b" / "results.json"}


def test_scores_frame_holds_every_score(runs: dict[str, Path]) -> None:
    raw = json.loads(runs["a"].read_text())
    frame = scores_frame(runs["a"].parent)  # DIR alone is accepted, as everywhere
    assert list(frame.columns) == [
        "model", "role", "task", "family", "metric", "primary", "value", "ci_low", "ci_high", "n"
    ]  # fmt: skip
    assert len(frame) == len(raw["scores"])
    row = frame[(frame.model == "distilled") & (frame.task == "gate_qa") & (frame.metric == "f1")].iloc[0]
    want = next(
        s for s in raw["scores"] if (s["model"], s["task"], s["metric"]) == ("distilled", "gate_qa", "f1")
    )
    assert (row.value, row.n, row.role, row.family, bool(row.primary)) == (
        want["value"],
        want["n"],
        "distilled",
        "qa",
        True,
    )
    pivot = frame[frame.primary].pivot(index="task", columns="model", values="value")
    assert (pivot["teacher"] >= pivot["distilled"]).all()


def test_samples_frame_one_row_per_example(runs: dict[str, Path]) -> None:
    frame = samples_frame(runs["a"])
    assert len(frame) == 2 * 3 * 20  # models x tasks x examples
    assert list(frame.columns[:7]) == ["model", "task", "id", "prompt", "output", "answer", "references"]
    assert "rows" not in frame.columns and {"f1", "exact_match", "accuracy", "chrf"} <= set(frame.columns)
    qa = samples_frame(runs["a"], model="distilled", task="gate_qa")
    assert len(qa) == 20 and set(qa.model) == {"distilled"} and qa["f1"].notna().all()
    # the mean of per-example exact_match is the run's score
    score = scores_frame(runs["a"]).query(
        "model == 'distilled' and task == 'gate_qa' and metric == 'exact_match'"
    )
    assert qa["exact_match"].mean() == pytest.approx(score.value.iloc[0])
    with pytest.raises(UserError, match="model 'nope' is not in this run"):
        samples_frame(runs["a"], model="nope")


def test_leaderboard_frame_ranks_models(runs: dict[str, Path]) -> None:
    frame = leaderboard_frame([runs["a"], runs["b"]])
    assert list(frame["rank"]) == [1, 2, 3]
    assert frame.iloc[0].model == "teacher" and frame.iloc[-1].run == str(runs["b"])
    assert {"overall", "retention", "qa", "gate_qa.f1"} <= set(frame.columns)
    assert frame.overall.is_monotonic_decreasing


def test_export_csv_and_parquet(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    assert main(["export", str(runs["a"]), "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), scores_frame(runs["a"]), check_dtype=False)
    assert "wrote" in capsys.readouterr().err
    samples = tmp_path / "s.csv"
    assert (
        main(["export", str(runs["a"]), "--table", "samples", "--model", "teacher", "--out", str(samples)])
        == 0
    )
    assert len(pd.read_csv(samples)) == 60
    lb = tmp_path / "lb.csv"
    assert main(["export", str(runs["a"]), str(runs["b"]), "--table", "leaderboard", "--out", str(lb)]) == 0
    assert list(pd.read_csv(lb).model) == ["teacher", "distilled", "distilled"]
    capsys.readouterr()
    assert main(["export", str(runs["a"]), str(runs["b"]), "--out", str(out)]) == 2
    assert "scores export reads one run, got 2" in capsys.readouterr().err
    parquet = tmp_path / "scores.parquet"
    code = main(["export", str(runs["a"]), "--out", str(parquet)])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        err = capsys.readouterr().err
        assert (
            code == 2
            and err.startswith("kdeval: error: Parquet export needs pyarrow")
            and err.count("\n") == 1
        )
        assert not parquet.exists()
    else:
        assert code == 0
        pd.testing.assert_frame_equal(pd.read_parquet(parquet), scores_frame(runs["a"]))


def test_help_does_not_import_pandas() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from kdeval.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['export', '--help'])\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
