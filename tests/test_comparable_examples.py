"""Issue 10: every model of a task is compared on the same examples, and ratios whose denominator
is noise around zero are not shown. Scripted backend, no models."""

from __future__ import annotations

import json
from pathlib import Path

from kdeval.backends.registry import ResolvedModel
from kdeval.compare import compare, rerender
from kdeval.config import ModelSpec, RunSpec
from kdeval.derive import derive
from kdeval.gate.rules import parse_rule
from kdeval.gate.run import Options, gate
from kdeval.plugins import Catalog
from kdeval.report.markdown import render
from kdeval.results import RunResult
from kdeval.runs import read_results
from kdeval.tasks import Suite
from tests.fakes import ScriptedBackend, ToyChoice, ToyTeacherRef, fake_checkpoint

# toy_ref: r0, r4, r8 have no reference (the teacher cannot be scored on them); the teacher answers
# "" on r0, r3, r6, r9, so before the fix the students were scored on r4 and r8 too (11 vs 9)
ROLES = {"teacher": "good_mute_teacher", "baseline": "bad_baseline", "distilled": "good_distilled"}


def _run(tmp: Path, roles: dict[str, str] = ROLES) -> RunResult:
    models = [ModelSpec(name=r, path=fake_checkpoint(tmp / p, p), role=r) for r, p in roles.items()]  # type: ignore[arg-type]
    spec = RunSpec(models=models, out=tmp / "out")
    catalog = Catalog({"toy": Suite("toy", "toy", "toy tasks", [ToyChoice(), ToyTeacherRef()])})

    def factory(s: RunSpec, model: ResolvedModel) -> ScriptedBackend:
        return ScriptedBackend(model.path)

    return compare(spec, catalog, argv=["test"], log=lambda m: None, make_backend=factory)  # type: ignore[arg-type]


def test_every_model_is_scored_on_the_same_examples(tmp_path: Path) -> None:
    result = _run(tmp_path)
    ns = {(s.model, s.metric): s.n for s in result.scores if s.task == "toy_ref"}
    assert set(ns.values()) == {9}, ns
    assert {a.n for a in result.agreement if a.task == "toy_ref"} == {9}
    task = next(t for t in result.tasks if t.name == "toy_ref")
    assert (task.n_examples, task.compared, task.dropped) == (12, 9, {"no reference answer": 3})
    assert next(t for t in result.tasks if t.name == "toy_choice").compared is None  # nothing dropped
    records = [
        json.loads(x) for x in (tmp_path / "out/samples/distilled/toy_ref.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in records if "excluded" in r] == ["r0", "r4", "r8"]
    report = (tmp_path / "out/report.md").read_text()
    assert "toy_ref: every model is scored on the same 9 of 12 examples; 3 dropped" in report
    assert "no reference answer (3)" in report and "| 12 (9 compared) |" in report
    assert read_results(tmp_path / "out").tasks == result.tasks  # written and read back
    assert rerender(tmp_path / "out") == report


def test_gate_runs_on_a_run_with_dropped_examples(tmp_path: Path) -> None:
    _run(tmp_path)
    out = tmp_path / "out"
    rules = [parse_rule(r) for r in ("toy_ref.chrf:-1pt", "overall:-1pt", "retention>=0.5", "agreement>=0.1")]
    result = gate(out, out, rules, Options())
    assert [o.status for o in result.outcomes] == ["pass"] * 4, [o.reason for o in result.outcomes]


def test_gate_skips_unscored_records_of_older_runs(tmp_path: Path) -> None:
    """Runs written before examples were marked: unscored examples have empty scores."""
    _run(tmp_path)
    out = tmp_path / "out"
    for f in (out / "samples").glob("*/toy_ref.jsonl"):
        recs = [json.loads(x) for x in f.read_text().splitlines()]
        for r in recs:
            if r.pop("excluded", None) and f.parent.name == "teacher":
                r["scores"], r["rows"] = {}, {}
        f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rules = [parse_rule(r) for r in ("toy_ref.chrf:-1pt", "retention>=0.5")]
    assert [o.status for o in gate(out, out, rules, Options()).outcomes] == ["pass", "pass"]


def _with_ci(result: RunResult, model: str, value: float, low: float, high: float) -> None:
    result.scores = [
        s.model_copy(update={"value": value, "ci_low": low, "ci_high": high})
        if (s.model, s.task, s.metric) == (model, "toy_choice", "accuracy")
        else s
        for s in result.scores
    ]


def test_ratio_over_a_denominator_near_zero_is_not_shown(tmp_path: Path) -> None:
    result = _run(tmp_path)
    _with_ci(result, "teacher", 2.0, 0.0, 6.0)  # 2 [0, 6]: retention would be 40x
    _with_ci(result, "baseline", 1.0, 0.0, 3.0)
    derive(result)
    comp = next(c for c in result.comparisons if (c.scope, c.name) == ("task", "toy_choice"))
    assert comp.retention is None and comp.gap_closed is None
    assert comp.notes == ["teacher-near-zero", "gap-near-zero"]
    report = render(result)
    assert "not meaningful: the teacher's score is within its interval of zero" in report
    assert "not meaningful: the teacher−baseline gap is within its interval of zero" in report
    row = next(line for line in report.splitlines() if "| toy_choice | accuracy |" in line)
    assert row.count("— [") == 2


def test_gap_near_zero_alone(tmp_path: Path) -> None:
    result = _run(tmp_path)
    _with_ci(result, "teacher", 60.0, 50.0, 70.0)
    _with_ci(result, "baseline", 57.0, 47.0, 67.0)  # gap 3, intervals combined ~ [-11, 17]
    derive(result)
    comp = next(c for c in result.comparisons if (c.scope, c.name) == ("task", "toy_choice"))
    assert comp.retention is not None and comp.gap_closed is None and comp.notes == ["gap-near-zero"]
