"""The regression gate: rule parsing, paired tests, planted regressions, refusals, outputs."""

from __future__ import annotations

import doctest
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import sacrebleu
import yaml

from kdeval.errors import UserError
from kdeval.gate import render, rules, stats
from kdeval.gate.cli import main
from kdeval.gate.rules import Floor, MetricPath, Tolerance, load_config, parse_rule
from kdeval.gate.run import Context, GateResult, NoData, Options, Outcome, gate
from kdeval.gate.stats import bootstrap, mcnemar_exact, p_below, part_from_records
from kdeval.metrics import METRICS
from tests.fakes_gate import checkpoint, run_compare

# --- runs shared by the tests (scripted backend, ~0.5 s each) --------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate")
    teacher, baseline = checkpoint(root, "teacher", 0.0), checkpoint(root, "baseline", 0.5, seed=1)

    def run(name: str, distilled: str, **settings: object) -> Path:
        run_compare(
            root / name, {"teacher": teacher, "baseline": baseline, "distilled": distilled}, **settings
        )
        return root / name / "results.json"

    main_ckpt = checkpoint(root, "distilled", 0.20, seed=2)
    return {
        "main": run("main", main_ckpt),
        "rerun": run("rerun", main_ckpt),  # same checkpoint, fresh run: must not raise an alarm
        "degraded": run("degraded", checkpoint(root, "degraded", 0.45, seed=3)),
        # the same mistakes plus a couple more: a real but tiny drop
        "small": run("small", checkpoint(root, "small", 0.205, seed=2)),
        "limited": run("limited", main_ckpt, limit=100),
    }


def _gate(runs: dict[str, Path], cand: str, *rules: str, **opts: Any) -> GateResult:
    return gate(runs["main"], runs[cand], [parse_rule(r) for r in rules], Options(**opts))


def _variant(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a run (results and samples) with its results.json edited."""
    shutil.copytree(src.parent, dst)
    raw = json.loads((dst / "results.json").read_text())
    edit(raw)
    (dst / "results.json").write_text(json.dumps(raw))
    return dst / "results.json"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["gate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("qa.f1:-1pt", Tolerance("qa.f1:-1pt", MetricPath("quality", "qa", "f1"), 1.0, "pt")),
        (
            "math.accuracy:-2%",
            Tolerance("math.accuracy:-2%", MetricPath("quality", "math", "accuracy"), 2.0, "%"),
        ),
        ("overall:0.5pt", Tolerance("overall:0.5pt", MetricPath("quality", "overall", "primary"), 0.5, "pt")),
        (
            "latency.p50:+10%",
            Tolerance("latency.p50:+10%", MetricPath("efficiency", "latency", "p50"), 10.0, "%"),
        ),
        (
            "memory.peak:+64MiB",
            Tolerance("memory.peak:+64MiB", MetricPath("efficiency", "memory", "peak"), 64, "MiB"),
        ),
        ("retention>=0.90", Floor("retention>=0.90", MetricPath("ratio", "overall", "retention"), ">=", 0.9)),
        ("qa.retention>=85%", Floor("qa.retention>=85%", MetricPath("ratio", "qa", "retention"), ">=", 0.85)),
        ("gate_qa.f1 >= 70", Floor("gate_qa.f1 >= 70", MetricPath("quality", "gate_qa", "f1"), ">=", 70.0)),
        (
            "latency.p99<=250",
            Floor("latency.p99<=250", MetricPath("efficiency", "latency", "p99"), "<=", 250.0),
        ),
    ],
)
def test_rule_forms(text: str, expected: object) -> None:
    assert parse_rule(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qa.f1", "expected PATH:TOLERANCE"),
        ("qa.f1:-1", "tolerance needs a unit: % or pt"),
        ("qa.f1:+1pt", "write qa.f1:-1pt"),
        ("latency.p50:-10%", "write latency.p50:+10%"),
        ("qa.bleurt:-1pt", "unknown metric 'bleurt'"),
        ("a.b.c:-1pt", "must be SCOPE.METRIC"),
        ("latency:+10%", "latency.p50"),
        ("retention:-1pt", "retention takes a floor"),
        ("retention>=90", "write retention>=0.9 or 90%"),
        ("qa.f1>=101", "0-100 scale"),
    ],
)
def test_malformed_rules_say_how_to_fix(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("+", r"\+").replace(".", r"\.")):
        parse_rule(text)


def test_config_file(tmp_path: Path) -> None:
    f = tmp_path / "gate.yaml"
    f.write_text("rules:\n  - qa.f1:-1pt\n  - retention>=0.9\nalpha: 0.01\nstrict: true\nmodel: distilled\n")
    loaded = load_config(f)
    assert [r.text for r in loaded.rules] == ["qa.f1:-1pt", "retention>=0.9"]
    assert (loaded.config.alpha, loaded.config.strict, loaded.config.model) == (0.01, True, "distilled")


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("rules:\n  - qa.f1:-1pt\nalpah: 0.1\n", ":3", "unknown key 'alpah'"),
        ("rules: [qa.f1:-1pt\nalpha: 0.1\n", ":", "malformed YAML"),
        ("rules:\n  - qa.f1:-1pt\n  - qa.f1:+1pt\n", ":3", "write qa.f1:-1pt"),
        ("alpha: 2\n", ":1", "alpha: Input should be less than 1"),
        ("- qa.f1:-1pt\n", ":1", "expected a mapping"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, text: str, where: str, message: str) -> None:
    f = tmp_path / "gate.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        load_config(f)
    assert str(exc.value).startswith(f"{f}{where}") and message in str(exc.value)


# --- statistics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [rules, stats, render], ids=lambda m: m.__name__)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(("worse", "better"), [(0, 0), (1, 0), (4, 1), (7, 3), (30, 12), (2600, 2500)])
def test_mcnemar_is_the_exact_binomial_tail(worse: int, better: int) -> None:
    n = worse + better
    expected = sum(math.comb(n, k) for k in range(worse, n + 1)) / 2**n if n else 1.0
    assert mcnemar_exact(worse, better) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_large_counts_use_log_space_consistently() -> None:
    worse, better = 3100, 2900
    n = worse + better
    exact = sum(math.comb(n, k) for k in range(worse, n + 1)) / 2**n
    assert mcnemar_exact(worse, better) == pytest.approx(exact, rel=1e-6)


def test_bootstrap_recomputes_corpus_bleu_from_rows() -> None:
    refs = ["the cat sat on the mat", "a dog ran in the park", "birds fly south in winter"] * 5
    hyp_a = ["the cat sat on a mat", "a dog ran in the park", "birds fly north"] * 5
    hyp_b = ["a cat", "the dog ran", "birds fly south in winter"] * 5

    def records(hyps: list[str]) -> dict[str, dict[str, Any]]:
        return {
            str(i): {"rows": {"bleu": METRICS["bleu"].stats(h, [r])}}
            for i, (h, r) in enumerate(zip(hyps, refs, strict=True))
        }

    est = bootstrap(
        [part_from_records("t", "f", "bleu", records(hyp_a), records(hyp_b), "x")], n_resamples=50
    )
    assert est.a == pytest.approx(sacrebleu.corpus_bleu(hyp_a, [refs]).score)
    assert est.b == pytest.approx(sacrebleu.corpus_bleu(hyp_b, [refs]).score)


def test_records_without_rows_fall_back_to_per_example_means() -> None:
    a = {"1": {"scores": {"bleu": 50.0}}, "2": {"scores": {"bleu": 100.0}}}
    part = part_from_records("t", "f", "bleu", a, a, "x")
    assert not part.exact and bootstrap([part], n_resamples=10).a == 75.0


def test_identical_arms_give_p_one() -> None:
    assert p_below(0.0, np.zeros(100)) == 1.0


# --- planted regressions ---------------------------------------------------------------------

RULES = ("gate_math.accuracy:-1pt", "qa.f1:-1pt", "chat.chrf:-1pt", "gate_chat.bleu:-2%", "overall:-1pt")


def test_identical_rerun_passes(runs: dict[str, Path]) -> None:
    result = _gate(runs, "rerun", *RULES, "retention>=0.7")
    assert result.exit_code == 0
    assert all(o.status == "pass" for o in result.outcomes)
    assert all(o.p_value == 1.0 and o.effect == 0.0 for o in result.outcomes[:5])


def test_degraded_student_fails_every_quality_rule(runs: dict[str, Path]) -> None:
    result = _gate(runs, "degraded", *RULES)
    assert result.exit_code == 1
    assert [o.status for o in result.outcomes] == ["fail"] * 5
    math_rule = result.outcomes[0]
    assert math_rule.test.startswith("McNemar exact") and math_rule.p_value is not None
    assert math_rule.p_value < 1e-6
    for o in result.outcomes:
        assert o.effect is not None and o.high is not None and o.high < 0  # the whole interval is a drop
    assert "paired bootstrap" in result.outcomes[1].test


def test_small_drop_passes_unless_strict(runs: dict[str, Path]) -> None:
    rule = "gate_math.accuracy:-0.25pt"
    loose = _gate(runs, "small", rule).outcomes[0]
    assert loose.effect is not None and loose.effect < -0.25  # beyond the tolerance...
    assert loose.p_value is not None and loose.p_value > 0.05  # ...but within noise
    assert loose.status == "pass" and "--strict would fail it" in loose.reason
    strict = _gate(runs, "small", rule, strict=True)
    assert strict.exit_code == 1 and strict.outcomes[0].status == "fail"


def test_percent_tolerance_is_relative_to_the_baseline(runs: dict[str, Path]) -> None:
    o = _gate(runs, "degraded", "qa.f1:-50%").outcomes[0]
    assert o.baseline and o.candidate and o.effect is not None
    assert o.effect == pytest.approx(100 * (o.candidate - o.baseline) / o.baseline)
    assert o.status == "pass"  # a ~20% relative drop is within a 50% tolerance


def test_floors_are_absolute(runs: dict[str, Path]) -> None:
    result = _gate(runs, "degraded", "retention>=0.70", "gate_qa.f1>=50", "gap_closed>=0.1", "agreement>=0.9")
    statuses = {o.rule.text: o.status for o in result.outcomes}
    assert statuses == {
        "retention>=0.70": "fail",
        "gate_qa.f1>=50": "pass",
        "gap_closed>=0.1": "pass",
        "agreement>=0.9": "fail",
    }
    retention = result.outcomes[0]
    assert retention.candidate is not None and retention.candidate < 0.7 and retention.p_value is not None


# --- exit codes and refusals (through the CLI) ---------------------------------------------------


def test_cli_exit_codes_and_outputs(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md, xml = tmp_path / "gate.md", tmp_path / "gate.xml"
    base = ["--baseline", str(runs["main"]), "--summary-md", str(md), "--junit", str(xml)]
    code, out, _ = _cli(capsys, *base, "--candidate", str(runs["rerun"]), "--rule", "qa.f1:-1pt")
    assert code == 0 and "passed" in out and "✅ passed" in md.read_text()
    rules = [x for r in RULES for x in ("--rule", r)]
    code, out, _ = _cli(capsys, *base, "--candidate", str(runs["degraded"]), *rules)
    assert code == 1 and out.count("FAIL ") == 5 and "regression: 5 of 5 rules failed" in out
    summary = md.read_text()
    assert "❌ regression" in summary and "| ❌ | `qa.f1:-1pt` |" in summary and "McNemar exact" in summary
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "5"
    assert [c.get("name") for c in suite.iter("testcase")] == list(RULES)


def test_cli_config_and_flags_combine(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "gate.yaml"
    cfg.write_text("rules:\n  - gate_math.accuracy:-0.25pt\nalpha: 0.05\n")
    argv = ["--baseline", str(runs["main"]), "--candidate", str(runs["small"]), "--config", str(cfg)]
    assert _cli(capsys, *argv)[0] == 0
    assert _cli(capsys, *argv, "--strict")[0] == 1
    assert _cli(capsys, *argv, "--alpha", "0.5")[0] == 1  # p = 0.25 is significant at 0.5


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("kdeval: error: "), err
    return err


def test_unusable_inputs_exit_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = ["--baseline", str(runs["main"]), "--candidate", str(runs["rerun"])]
    assert "results file not found" in _one_line_error(
        capsys,
        "--baseline",
        str(tmp_path / "nope.json"),
        "--candidate",
        str(runs["rerun"]),
        "--rule",
        "qa.f1:-1pt",
    )
    assert "rule 'qa.f1:+1pt'" in _one_line_error(capsys, *ok, "--rule", "qa.f1:+1pt")
    code, out, err = _cli(capsys, *ok)  # no rule: the documented default, overall:-1pt
    assert code == 0 and "overall" in out and "default overall:-1pt" in err, (out, err)
    assert "no task or family 'nli'" in _one_line_error(capsys, *ok, "--rule", "nli.accuracy:-1pt")
    assert "model 'nobody' is not in this run" in _one_line_error(
        capsys, *ok, "--model", "nobody", "--rule", "overall:-1pt"
    )
    assert "--alpha must be between 0 and 1" in _one_line_error(
        capsys, *ok, "--alpha", "1.5", "--rule", "overall:-1pt"
    )


def test_incomparable_runs_are_refused_saying_what_differs(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["settings"]["temperature"] = 0.7
        raw["tasks"][0]["prompt_hash"] = "0000"
        raw["tasks"][1]["version"] = "2"
        next(m for m in raw["models"] if m["role"] == "distilled")["chat_template"] = True

    other = _variant(runs["rerun"], tmp_path / "other", edit)
    md, xml = tmp_path / "gate.md", tmp_path / "gate.xml"
    err = _one_line_error(
        capsys,
        "--baseline",
        str(runs["main"]),
        "--candidate",
        str(other),
        "--rule",
        "overall:-1pt",
        "--summary-md",
        str(md),
        "--junit",
        str(xml),
    )
    for part in (
        "not comparable",
        "setting temperature 0.0 vs 0.7",
        "task gate_qa prompt_hash",
        "task gate_math version 1 vs 2",
        "chat template False vs True",
    ):
        assert part in err
    assert "unusable input" in md.read_text() and ET.parse(xml).getroot().find("testsuite") is not None


def test_different_limit_is_refused(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(
        capsys, "--baseline", str(runs["main"]), "--candidate", str(runs["limited"]), "--rule", "qa.f1:-1pt"
    )
    assert "setting limit None vs 100" in err and "n_examples 300 vs 100" in err


def test_missing_samples_are_unusable(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = _variant(runs["rerun"], tmp_path / "copy", lambda raw: None)
    shutil.rmtree(copy.parent / "samples")
    err = _one_line_error(
        capsys, "--baseline", str(runs["main"]), "--candidate", str(copy), "--rule", "qa.f1:-1pt"
    )
    assert "per-example samples for distilled/gate_qa are missing" in err


def test_model_choice(runs: dict[str, Path]) -> None:
    assert _gate(runs, "degraded", "overall:-1pt").model == "distilled"
    teacher = _gate(runs, "degraded", "overall:-1pt", model="teacher")
    assert teacher.model == "teacher" and teacher.exit_code == 0  # the teacher did not change


# --- efficiency rules ---------------------------------------------------------------------------


def _with_latency(src: Path, dst: Path, p50: float, device: str = "cpu") -> Path:
    def edit(raw: dict[str, Any]) -> None:
        raw["efficiency"] = {
            "distilled": {"device": device, "latency_ms": {"p50": p50}, "memory_mib": {"peak": 900}}
        }

    return _variant(src, dst, edit)


def test_latency_rules_with_and_without_data(runs: dict[str, Path], tmp_path: Path) -> None:
    old = _with_latency(runs["main"], tmp_path / "old", 40.0)
    slower = _with_latency(runs["rerun"], tmp_path / "slower", 46.0)
    rules = [parse_rule(r) for r in ("latency.p50:+10%", "latency.p50:+8ms", "memory.peak<=1024")]
    outcomes = gate(old, slower, rules, Options()).outcomes
    assert [o.status for o in outcomes] == ["fail", "pass", "pass"]
    assert outcomes[0].effect == pytest.approx(15.0) and outcomes[0].p_value is None
    missing = gate(runs["main"], slower, rules[:1], Options())
    assert missing.exit_code == 2 and "baseline run has no efficiency figure" in missing.outcomes[0].reason


def test_latency_on_different_devices_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    old = _with_latency(runs["main"], tmp_path / "old", 40.0, device="cpu")
    new = _with_latency(runs["rerun"], tmp_path / "new", 40.0, device="NVIDIA H100")
    with pytest.raises(UserError, match="efficiency measured on cpu vs NVIDIA H100"):
        gate(old, new, [parse_rule("latency.p50:+10%")], Options())


def test_ci_example_runs_the_gate() -> None:
    workflow = yaml.safe_load((Path(__file__).parent.parent / "docs" / "ci-example.yml").read_text())
    steps = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    # gate.yaml's compare: section runs `kdeval compare`: on main to store the run, on PRs to gate it
    assert any("kdeval gate --config gate.yaml --compare-only" in s for s in steps)
    assert any("kdeval gate --config gate.yaml --summary-md" in s for s in steps)


# --- rule kinds are a registry: a new kind is one class and one registration --------------------


@dataclass(frozen=True)
class _MinExamples(rules.Rule):
    """A custom kind: `examples(TASK)>=N`, the candidate run must score TASK on N examples."""

    kind: ClassVar[str] = "min_examples"
    form: ClassVar[str] = "examples(TASK)>=N"

    text: str
    task: str
    count: int

    @classmethod
    def parse(cls, text: str, where: str | None = None) -> _MinExamples | None:
        m = re.fullmatch(r"examples\((\w+)\)>=(\d+)", text.strip())
        return cls(text.strip(), m[1], int(m[2])) if m else None

    def evaluate(self, ctx: Context) -> Outcome:
        n = {t.name: t.n_examples for t in ctx.cand.result.tasks}.get(self.task)
        if n is None:
            raise NoData(f"the candidate run has no task {self.task}")
        ok = n >= self.count
        why = f"{n} examples" + ("" if ok else f", fewer than {self.count}")
        return Outcome(
            self, "pass" if ok else "fail", None, n, n - self.count, None, None, "", None, "", n, why
        )

    def baseline_cell(self, o: Outcome) -> str:
        return f">= {self.count}"

    def values(self, o: Outcome) -> str:
        return f"{o.candidate:g} examples (need {self.count})"


def test_a_custom_rule_kind_parses_evaluates_and_renders_itself(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match=r"PATH>=BOUND, fidelity\.MEASURE<=BOUND .* or agreement\.METRIC"):
        parse_rule("examples(gate_qa)>=10")
    monkeypatch.setitem(rules.RULE_KINDS, _MinExamples.kind, _MinExamples)
    with pytest.raises(UserError, match=r"PATH>=BOUND, fidelity\.MEASURE<=BOUND .* or examples\(TASK\)>=N$"):
        parse_rule("nonsense")
    assert parse_rule("examples(gate_qa)>=10") == _MinExamples("examples(gate_qa)>=10", "gate_qa", 10)
    assert isinstance(parse_rule("qa.f1:-1pt"), Tolerance)  # built-ins still come first

    result = _gate(runs, "rerun", "examples(gate_qa)>=10", "examples(gate_qa)>=100000", "examples(nope)>=1")
    assert [o.status for o in result.outcomes] == ["pass", "fail", "no data"]
    assert render.line(result.outcomes[1]).startswith("FAIL    examples(gate_qa)>=100000: ")
    assert "examples (need 100000)" in render.line(result.outcomes[1])
    assert "| `examples(gate_qa)>=100000` | >= 100000 |" in render.markdown(result)
    cases = ET.fromstring(render.junit(result)).iter("testcase")
    assert [c[0].tag for c in cases] == ["system-out", "failure", "error"]

    # the same kind from the command line and gate.yaml, mixed with built-ins
    config = tmp_path / "gate.yaml"
    config.write_text("rules:\n  - examples(gate_qa)>=10\n  - gate_qa.f1>=1\n")
    code, out, _ = _cli(
        capsys, "--baseline", str(runs["main"]), "--candidate", str(runs["rerun"]), "--config", str(config)
    )
    assert code == 0 and out.startswith("pass    examples(gate_qa)>=10: ")


def test_rule_kinds_come_from_entry_points(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class _EP:
        def __init__(self, name: str, obj: object) -> None:
            self.name, self.value, self._obj = name, f"tests:{name}", obj

        def load(self) -> object:
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    eps = [_EP("min_examples", _MinExamples), _EP("broken", ImportError("no module named x"))]
    monkeypatch.setattr(rules, "RULE_KINDS", dict(rules.RULE_KINDS))
    monkeypatch.setattr(rules, "_plugins_loaded", False)
    monkeypatch.setattr(rules, "entry_points", lambda group: eps if group == "kdeval.gate_rules" else [])
    assert isinstance(parse_rule("examples(gate_qa)>=3"), _MinExamples)
    assert "gate rule plugin 'broken' (tests:broken) failed to load" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already registered"):
        rules.register_rule_kind(type("Other", (_MinExamples,), {}))
