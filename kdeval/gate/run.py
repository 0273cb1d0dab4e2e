"""Load two runs, refuse incomparable ones, evaluate every rule, decide.

Which model is gated: the same model in both runs — by default the one with the `distilled`
role in each run (else the run's only model); `model=NAME` (`--model NAME`) picks it by name
in both runs instead. Ratio rules (retention, gap_closed, agreement) compare that model with the
teacher (and baseline) of the candidate run.

Decision per rule: a quality drop fails only when it is beyond the tolerance AND the paired test
finds it significant at `alpha` (`strict` drops the second condition). Floors are absolute: the
candidate must reach them (their p-value says how sure a shortfall is). Efficiency figures are
single measurements, so their rules check the tolerance alone. Exit code: 1 when any rule
fails, else 2 when any rule had no data, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kdeval.errors import UserError
from kdeval.gate import differences, pick_model
from kdeval.gate.rules import Floor, Rule, Tolerance
from kdeval.gate.stats import (
    Estimate,
    Part,
    bootstrap,
    discordant,
    interval,
    mcnemar_exact,
    p_below,
    part_from_records,
    scored,
)
from kdeval.metrics import finalize_mean, mean_row
from kdeval.runs import LoadedRun, load_run, scope_tasks

Status = Literal["pass", "fail", "no data"]


@dataclass(frozen=True)
class Options:
    alpha: float = 0.05
    strict: bool = False
    model: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One rule's verdict with the numbers behind it (effect and interval in `unit`)."""

    rule: Rule
    status: Status
    baseline: float | None
    candidate: float | None
    effect: float | None
    low: float | None
    high: float | None
    unit: str
    p_value: float | None
    test: str
    n: int | None
    reason: str


@dataclass(frozen=True)
class GateResult:
    baseline: LoadedRun
    candidate: LoadedRun
    model: str  # the gated model's name in the candidate run
    options: Options
    outcomes: list[Outcome]

    @property
    def exit_code(self) -> int:
        statuses = {o.status for o in self.outcomes}
        return 1 if "fail" in statuses else 2 if "no data" in statuses else 0


def gate(baseline: Path, candidate: Path, rules: Sequence[Rule], options: Options) -> GateResult:
    if not rules:
        raise UserError(
            "no rules to check", fix="pass --rule (e.g. --rule 'overall:-1pt') or --config gate.yaml"
        )
    base, cand = load_run(baseline), load_run(candidate)
    pair = _Pair(base, cand, pick_model(base, options.model), pick_model(cand, options.model), options)
    different = differences(base, cand, pair.ma, pair.mb, rules)
    if different:
        raise UserError(
            "runs are not comparable: " + "; ".join(different),
            fix="gate runs made with the same suite versions, data, prompts, chat template and settings",
        )
    return GateResult(base, cand, pair.mb, options, [pair.evaluate(r) for r in rules])


@dataclass
class _Pair:
    base: LoadedRun
    cand: LoadedRun
    ma: str  # gated model in the baseline run
    mb: str  # and in the candidate run
    options: Options

    # --- evaluation --------------------------------------------------------------------------

    def evaluate(self, rule: Rule) -> Outcome:
        if rule.path.kind == "efficiency":
            return self._efficiency(rule)
        if isinstance(rule, Floor):
            if rule.path.kind == "ratio":
                return self._ratio(rule)
            # a floor looks at the candidate alone: both arms of the bootstrap are the candidate
            est = bootstrap(
                self._parts(self.cand, self.mb, self.cand, self.mb, rule.path.scope, rule.path.metric)
            )
            return _floor_outcome(rule, est.b, est.b_reps, est.n, "bootstrap", self.options)
        est, p, test = self._compare(rule)
        return _tolerance_outcome(rule, est, p, test, self.options)

    def _parts(
        self, run_a: LoadedRun, ma: str, run_b: LoadedRun, mb: str, scope: str, metric: str
    ) -> list[Part]:
        return [
            part_from_records(
                t.name,
                t.family,
                m,
                run_a.records(ma, t.name),
                run_b.records(mb, t.name),
                where=str(run_b.path),
            )
            for t, m in scope_tasks(run_b, scope, metric)
        ]

    def _compare(self, rule: Tolerance) -> tuple[Estimate, float, str]:
        parts = self._parts(self.base, self.ma, self.cand, self.mb, rule.path.scope, rule.path.metric)
        est = bootstrap(parts)
        if len(parts) == 1 and parts[0].binary:
            worse, better = discordant(parts[0])
            return est, mcnemar_exact(worse, better), f"McNemar exact, {worse} worse / {better} better"
        approx = "" if all(p.exact for p in parts) else ", per-example means"
        return est, p_below(est.b - est.a, est.b_reps - est.a_reps), f"paired bootstrap{approx}"

    def _ratio(self, rule: Floor) -> Outcome:
        run, r = self.cand, self.cand.result
        teacher, baseline = r.role("teacher"), r.role("baseline")
        scope, metric = rule.path.scope, rule.path.metric
        missing = teacher is None or (metric == "gap_closed" and baseline is None) or teacher == self.mb
        if missing:
            need = "a teacher and a baseline" if metric == "gap_closed" else "a teacher"
            return _no_data(rule, f"{metric} needs {need} in the candidate run besides '{self.mb}'")
        assert teacher is not None
        if metric == "agreement":
            est = bootstrap(self._agreement_parts(teacher, scope))
            return _floor_outcome(rule, est.b / 100, est.b_reps / 100, est.n, "bootstrap", self.options)
        # Same seed and same example counts -> the same resamples, so the replicates line up.
        st = bootstrap(self._parts(run, teacher, run, self.mb, scope, "primary"))
        if metric == "retention":
            with np.errstate(divide="ignore", invalid="ignore"):
                reps = st.b_reps / st.a_reps
            value = st.b / st.a if st.a else float("nan")
            return _floor_outcome(rule, value, reps, st.n, "paired bootstrap", self.options)
        bl = bootstrap(self._parts(run, str(baseline), run, self.mb, scope, "primary"))
        value = (st.b - bl.a) / (st.a - bl.a) if st.a != bl.a else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = (st.b_reps - bl.a_reps) / (st.a_reps - bl.a_reps)
        return _floor_outcome(rule, value, reps, st.n, "paired bootstrap", self.options)

    def _agreement_parts(self, teacher: str, scope: str) -> list[Part]:
        parts = []
        for t, _ in scope_tasks(self.cand, scope, "primary"):
            mine, theirs = self.cand.records(self.mb, t.name), self.cand.records(teacher, t.name)
            rows = np.array(
                [
                    mean_row(float(mine[i].get("answer") == theirs.get(i, {}).get("answer")))
                    for i in sorted(mine)
                    if scored(mine[i]) and scored(theirs.get(i, {}))
                ]
            )
            parts.append(Part(t.name, t.family, finalize_mean, rows, rows, True))
        return parts

    def _efficiency(self, rule: Rule) -> Outcome:
        def figure(run: LoadedRun, model: str) -> float | None:
            fig = run.result.efficiency.get(model)
            return fig.figure(str(rule.path)) if fig else None

        b = figure(self.cand, self.mb)
        if isinstance(rule, Floor):
            if b is None:
                return _no_data(
                    rule, f"the candidate run has no efficiency figure {rule.path} for '{self.mb}'"
                )
            return _floor_outcome(rule, b, None, None, "single measurement", self.options)
        a = figure(self.base, self.ma)
        if a is None or b is None:
            which = "the baseline run" if a is None else "the candidate run"
            return _no_data(rule, f"{which} has no efficiency figure {rule.path} for its model")
        est = Estimate(a, b, np.array([]), np.array([]), 0)
        return _tolerance_outcome(rule, est, None, "tolerance only (single measurement)", self.options)


def _no_data(rule: Rule, why: str) -> Outcome:
    return Outcome(rule, "no data", None, None, None, None, None, rule.path.unit, None, "", None, why)


def _tolerance_outcome(rule: Tolerance, est: Estimate, p: float | None, test: str, opt: Options) -> Outcome:
    sign = 1.0 if rule.path.higher_is_better else -1.0
    delta = est.b - est.a
    lo, hi = interval(est.b_reps - est.a_reps) if est.a_reps.size else (None, None)
    if rule.unit == "%":
        scale = 100.0 / abs(est.a) if est.a else float("nan")
        allowed = rule.amount / 100 * abs(est.a)
    else:
        scale, allowed = 1.0, rule.amount
    effect = delta * scale
    low, high = (lo * scale, hi * scale) if lo is not None and hi is not None else (None, None)
    beyond = sign * delta < -allowed - 1e-9
    significant = p is None or p < opt.alpha  # no test (efficiency): the tolerance decides
    failed = beyond and (opt.strict or significant)
    reason = _tolerance_reason(rule, beyond, significant, p, opt)
    return Outcome(
        rule,
        "fail" if failed else "pass",
        est.a,
        est.b,
        effect,
        low,
        high,
        rule.unit,
        p,
        test,
        est.n or None,
        reason,
    )


def _tolerance_reason(rule: Tolerance, beyond: bool, significant: bool, p: float | None, opt: Options) -> str:
    tol = f"{rule.amount:g}{'' if rule.unit == '%' else ' '}{rule.unit} tolerance"
    if not beyond:
        return f"within the {tol}"
    if p is None:
        return f"beyond the {tol}"
    if significant:
        return f"beyond the {tol} and significant at alpha = {opt.alpha:g}"
    if opt.strict:
        return f"beyond the {tol}; not significant at alpha = {opt.alpha:g}, but --strict fails it"
    return f"beyond the {tol} but not significant at alpha = {opt.alpha:g} (noise; --strict would fail it)"


def _floor_outcome(
    rule: Floor, value: float, reps: np.ndarray | None, n: int | None, test: str, opt: Options
) -> Outcome:
    if not np.isfinite(value):
        return _no_data(rule, f"{rule.path} is undefined here (e.g. a teacher scoring 0, or a zero gap)")
    above = rule.op == ">="
    ok = value >= rule.bound if above else value <= rule.bound
    low = high = p = None
    if reps is not None:
        low, high = interval(reps - rule.bound)
        # H1: the true value is on the wrong side of the bound
        p = p_below(value, reps, rule.bound) if above else p_below(-value, -reps, -rule.bound)
    side = "at or above" if above else "at or below"
    reason = (
        f"{side} the bound {rule.bound:g}"
        if ok
        else f"not {side} the bound {rule.bound:g} (an absolute bound)"
    )
    return Outcome(
        rule,
        "pass" if ok else "fail",
        None,
        value,
        value - rule.bound,
        low,
        high,
        rule.path.unit,
        p,
        test,
        n,
        reason,
    )
