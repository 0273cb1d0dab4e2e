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

Each rule kind decides for itself (`Rule.evaluate`, kdeval.gate.rules); `Context` holds the
two runs and the measurements the kinds are made of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kdeval.errors import UserError
from kdeval.gate import differences, pick_model
from kdeval.gate.outcome import NoData, Options, Outcome, Status, no_data
from kdeval.gate.rules import Rule
from kdeval.gate.stats import (
    Estimate,
    Part,
    bootstrap,
    discordant,
    mcnemar_exact,
    p_below,
    part_from_records,
    scored,
)
from kdeval.metrics import finalize_mean, mean_row
from kdeval.runs import LoadedRun, load_run, scope_tasks

__all__ = ["Context", "GateResult", "NoData", "Options", "Outcome", "Status", "gate"]


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
    ctx = Context(base, cand, pick_model(base, options.model), pick_model(cand, options.model), options)
    different = differences(base, cand, ctx.ma, ctx.mb, rules)
    if different:
        raise UserError(
            "runs are not comparable: " + "; ".join(different),
            fix="gate runs made with the same suite versions, data, prompts, chat template and settings",
        )
    return GateResult(base, cand, ctx.mb, options, [ctx.evaluate(r) for r in rules])


@dataclass
class Context:
    """The two runs, the gated model in each, and the measurements rules are made of.

    A rule kind's `evaluate` (kdeval.gate.rules) combines these: a paired comparison of the two
    runs, a bootstrap of the candidate alone, a ratio against the candidate run's teacher, an
    efficiency figure. They raise `NoData` when the runs lack what was asked for."""

    base: LoadedRun
    cand: LoadedRun
    ma: str  # gated model in the baseline run
    mb: str  # and in the candidate run
    options: Options

    def evaluate(self, rule: Rule) -> Outcome:
        try:
            return rule.evaluate(self)
        except NoData as exc:
            return no_data(rule, str(exc))

    # --- measurements ------------------------------------------------------------------------

    def paired(self, scope: str, metric: str) -> tuple[Estimate, float, str]:
        """Candidate vs baseline on the same examples: the estimate, a one-sided p-value for a
        drop, and the test's name (McNemar for one binary task, else a paired bootstrap)."""
        parts = self._parts(self.base, self.ma, self.cand, self.mb, scope, metric)
        est = bootstrap(parts)
        if len(parts) == 1 and parts[0].binary:
            worse, better = discordant(parts[0])
            return est, mcnemar_exact(worse, better), f"McNemar exact, {worse} worse / {better} better"
        approx = "" if all(p.exact for p in parts) else ", per-example means"
        return est, p_below(est.b - est.a, est.b_reps - est.a_reps), f"paired bootstrap{approx}"

    def candidate_only(self, scope: str, metric: str) -> Estimate:
        """A bootstrap of the candidate alone (both arms are the candidate; read `b`)."""
        return bootstrap(self._parts(self.cand, self.mb, self.cand, self.mb, scope, metric))

    def figure(self, which: Literal["baseline", "candidate"], path: str) -> float | None:
        """The gated model's efficiency figure (e.g. 'latency.p50') in one run, if measured."""
        run, model = (self.base, self.ma) if which == "baseline" else (self.cand, self.mb)
        fig = run.result.efficiency.get(model)
        return fig.figure(path) if fig else None

    def ratio(self, scope: str, metric: str) -> tuple[float, np.ndarray, int, str]:
        """retention, gap_closed or agreement of the gated model against the candidate run's
        teacher (and baseline): value, bootstrap replicates, n and the test's name."""
        run, r = self.cand, self.cand.result
        teacher, baseline = r.role("teacher"), r.role("baseline")
        missing = teacher is None or (metric == "gap_closed" and baseline is None) or teacher == self.mb
        if missing:
            need = "a teacher and a baseline" if metric == "gap_closed" else "a teacher"
            raise NoData(f"{metric} needs {need} in the candidate run besides '{self.mb}'")
        assert teacher is not None
        if metric == "agreement":
            est = bootstrap(self._agreement_parts(teacher, scope))
            return est.b / 100, est.b_reps / 100, est.n, "bootstrap"
        # Same seed and same example counts -> the same resamples, so the replicates line up.
        st = bootstrap(self._parts(run, teacher, run, self.mb, scope, "primary"))
        if metric == "retention":
            with np.errstate(divide="ignore", invalid="ignore"):
                reps = st.b_reps / st.a_reps
            value = st.b / st.a if st.a else float("nan")
            return value, reps, st.n, "paired bootstrap"
        bl = bootstrap(self._parts(run, str(baseline), run, self.mb, scope, "primary"))
        value = (st.b - bl.a) / (st.a - bl.a) if st.a != bl.a else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = (st.b_reps - bl.a_reps) / (st.a_reps - bl.a_reps)
        return value, reps, st.n, "paired bootstrap"

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
