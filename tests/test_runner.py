"""Runner, store, aggregation and report on a toy suite with a scripted backend (no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdeval.backends.registry import ResolvedModel
from kdeval.compare import compare, rerender
from kdeval.config import ModelSpec, RunSpec
from kdeval.results import RunResult
from kdeval.runs import read_results
from tests.fakes import ScriptedBackend, fake_checkpoint, toy_catalog

# 20 choice requests + 15 chat examples x 2 stages per model
PER_MODEL = 20 + 15 * 2


def _model(tmp: Path, name: str, weights: str | None = None) -> str:
    # Identical checkpoints share a fingerprint (and stored outputs), so each fake gets its own bytes.
    return fake_checkpoint(tmp / name, weights or name)


def _spec(tmp: Path, roles: dict[str, str]) -> RunSpec:
    models = [ModelSpec(name=r, path=_model(tmp, p), role=r) for r, p in roles.items()]  # type: ignore[arg-type]
    return RunSpec(models=models, out=tmp / "out")


def _run(spec: RunSpec, fail_after: int | None = None) -> RunResult:
    def factory(s: RunSpec, model: ResolvedModel) -> ScriptedBackend:
        return ScriptedBackend(model.path, fail_after)

    return compare(spec, toy_catalog(), argv=["test"], log=lambda m: None, make_backend=factory)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _reset_served() -> None:
    ScriptedBackend.served = []


ROLES = {"teacher": "good_teacher", "baseline": "bad_baseline", "distilled": "good_distilled"}


def test_compare_writes_results_report_and_samples(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, ROLES))
    out = tmp_path / "out"
    assert len(ScriptedBackend.served) == 3 * PER_MODEL
    assert read_results(out / "results.json").scores == result.scores
    teacher = result.value("teacher", "toy_choice", "accuracy")
    baseline = result.value("baseline", "toy_choice", "accuracy")
    assert teacher == 100.0 and baseline is not None and baseline < 100.0
    comp = next(c for c in result.comparisons if c.name == "toy_choice")
    assert comp.retention == 1.0 and comp.gap_closed == 1.0 and comp.agreement == 1.0
    lines = (out / "samples" / "baseline" / "toy_chat.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["id"] == "g0" and len(record["output"]) == 2 and "chrf" in record["scores"]
    report = (out / "report.md").read_text()
    assert "| toy | toy_choice | accuracy | 100.0 [100.0, 100.0] |" in report
    assert rerender(out / "results.json", tmp_path / "again.md") == report


def test_second_stage_sees_first_answer(tmp_path: Path) -> None:
    _run(_spec(tmp_path, {"teacher": "good_teacher"}))
    rec = json.loads((tmp_path / "out/samples/teacher/toy_chat.jsonl").read_text().splitlines()[3])
    assert rec["prompt"][1].endswith("again after number 3")


def test_interrupted_run_resumes_without_recomputing(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ROLES)
    with pytest.raises(KeyboardInterrupt):
        _run(spec, fail_after=PER_MODEL + 7)
    assert not (tmp_path / "out" / "results.json").exists()
    assert len(ScriptedBackend.served) == PER_MODEL + 7
    resumed = _run(spec)
    assert len(ScriptedBackend.served) == 3 * PER_MODEL  # nothing completed was served twice
    assert sum(m.reused for m in resumed.models) == PER_MODEL + 7
    (tmp_path / "fresh").mkdir()
    clean = _run(_spec(tmp_path / "fresh", ROLES))
    assert clean.scores == resumed.scores and clean.agreement == resumed.agreement


def test_changed_distilled_checkpoint_reruns_only_that_model(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ROLES)
    _run(spec)
    ScriptedBackend.served = []
    _model(tmp_path, "good_distilled", weights="new weights")
    result = _run(spec)
    assert set(ScriptedBackend.served) == {str(tmp_path / "good_distilled")}
    assert len(ScriptedBackend.served) == PER_MODEL
    assert {m.name: m.reused for m in result.models} == {
        "teacher": PER_MODEL,
        "baseline": PER_MODEL,
        "distilled": 0,
    }


def test_missing_teacher_shows_dash_with_footnote(tmp_path: Path) -> None:
    _run(_spec(tmp_path, {"baseline": "bad_baseline", "distilled": "good_distilled"}))
    report = (tmp_path / "out/report.md").read_text()
    assert "— [1]" in report and "[1] no teacher in this run" in report


def test_zero_gap_is_footnoted_not_divided(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, {"teacher": "good_a", "baseline": "good_b", "distilled": "bad_c"}))
    comp = next(c for c in result.comparisons if c.name == "toy_choice")
    assert comp.gap_closed is None and "zero-gap" in comp.notes
    assert "zero gap" in (tmp_path / "out/report.md").read_text()


def test_training_logs_are_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    from kdeval.config import model_fingerprint

    d = Path(_model(tmp_path, "m"))
    before = model_fingerprint(str(d))
    (d / "train_log.jsonl").write_text('{"step": 1, "seconds": 0.3}\n')
    (d / "distill_summary.json").write_text('{"seconds": 12.5}')
    assert model_fingerprint(str(d)) == before
    fake_checkpoint(d, "other weights")
    assert model_fingerprint(str(d)) != before
