"""Gate rules on how close the gated student is to its run's teacher (bounds on the candidate run).

``fidelity.MEASURE<=BOUND`` / ``>=`` on the `fidelity` rows (kdeval.fidelity): ``fidelity.kl<=0.8``,
``fidelity.top1>=60%``, ``fidelity.qa.jsd<=0.1``. MEASURE is kl, rkl, jsd, nll, ppl (lower is
better), top1 or ece (in %).

``agreement.METRIC>=BOUND`` on the graded similarity of its free-text answers to the teacher's
(kdeval.similarity): ``agreement.chrf>=40``, ``agreement.summ_synth.rougeL>=20``.

Overall by default, or ``KIND.SCOPE.MEASURE`` for a task or family. The interval shown is the
row's own 95% bootstrap interval, less the bound. A student without numbers (e.g. tokenizers
differ) is 'no data', never a pass.

>>> FidelityBound.parse("fidelity.top1>=60%")
FidelityBound(text='fidelity.top1>=60%', scope='overall', measure='top1', op='>=', bound=60.0)
>>> SimilarityBound.parse("agreement.chrf>=40").measure
'chrf'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from kdeval.gate.outcome import NoData, Outcome
from kdeval.gate.rules import Rule, _bad, register_rule_kind

if TYPE_CHECKING:
    from kdeval.gate.run import Context
    from kdeval.results import FidelityRow, RunResult, SimilarityRow

_TAIL = (
    r"(?:(?P<scope>[A-Za-z0-9_\-]+)\.)?(?P<measure>\w+)\s*(?P<op>>=|<=)\s*"
    r"(?P<bound>-?\d+(?:\.\d+)?)\s*(?P<pct>%?)$"
)


@dataclass(frozen=True)
class _TeacherBound(Rule):
    """A floor or ceiling on one teacher-relative row of the candidate run."""

    form: ClassVar[str]
    prefix: ClassVar[str | None]
    text: str
    scope: str
    measure: str
    op: Literal[">=", "<="]
    bound: float

    @classmethod
    def parse(cls, text: str, where: str | None = None) -> _TeacherBound | None:
        m = re.match(rf"^{cls.prefix}\.{_TAIL}", text.strip())
        if m is None:
            return None
        cls._check(text, m["measure"], bool(m["pct"]), where)
        op: Literal[">=", "<="] = ">=" if m["op"] == ">=" else "<="
        return cls(text.strip(), m["scope"] or "overall", m["measure"], op, float(m["bound"]))

    @classmethod
    def _check(cls, text: str, measure: str, percent: bool, where: str | None) -> None:
        """A UserError for a measure the kind does not know or a unit it does not take."""

    def _row(self, r: RunResult, model: str, scope: str) -> FidelityRow | SimilarityRow | None:
        raise NotImplementedError

    def evaluate(self, ctx: Context) -> Outcome:
        r = ctx.cand.result
        tasks = {t.name for t in r.tasks}
        scope = "overall" if self.scope == "overall" else "task" if self.scope in tasks else "family"
        row = self._row(r, ctx.mb, scope)
        if row is None:
            raise NoData(
                f"the candidate run has no {self.prefix}.{self.measure} for '{ctx.mb}' at {self.scope}"
            )
        if row.value is None:
            raise NoData(
                f"'{ctx.mb}' has no {self.prefix} numbers: {getattr(row, 'note', None) or 'not computed'}"
            )
        above = self.op == ">="
        ok = row.value >= self.bound if above else row.value <= self.bound
        low = None if row.ci_low is None else row.ci_low - self.bound
        high = None if row.ci_high is None else row.ci_high - self.bound
        side = "at or above" if above else "at or below"
        reason = f"{side} the bound {self.bound:g}" if ok else f"not {side} the bound {self.bound:g}"
        unit = "pt" if self.value_unit in ("%", "pt") else ""  # a difference of percentages is in points
        source = getattr(row, "source", "")
        test = f"bootstrap interval ({source} teacher)" if source else "bootstrap interval"
        status: Literal["pass", "fail"] = "pass" if ok else "fail"
        return Outcome(self, status, None, row.value, row.value - self.bound, low, high, unit,
                       None, test, row.n, reason)  # fmt: skip

    def baseline_cell(self, o: Outcome) -> str:
        return f"{self.op} {self.bound:g}"

    def values(self, o: Outcome) -> str:
        from kdeval.gate.render import number

        return f"{number(o.candidate, self.value_unit)} (bound {self.bound:g})"


@register_rule_kind
@dataclass(frozen=True)
class FidelityBound(_TeacherBound):
    kind: ClassVar[str] = "fidelity"
    form: ClassVar[str] = "fidelity.MEASURE<=BOUND (fidelity.kl<=0.8, fidelity.top1>=60%)"
    prefix: ClassVar[str | None] = "fidelity"

    @classmethod
    def _check(cls, text: str, measure: str, percent: bool, where: str | None) -> None:
        from kdeval.fidelity.measures import MEASURES

        if measure not in MEASURES:
            _bad(text, f"unknown fidelity measure '{measure}' (known: {', '.join(MEASURES)})", where)
        if percent and MEASURES[measure].unit != "%":
            _bad(text, f"fidelity.{measure} is in {MEASURES[measure].unit or 'plain numbers'}, not %", where)

    @property
    def value_unit(self) -> str:
        from kdeval.fidelity.measures import MEASURES

        return "%" if MEASURES[self.measure].unit == "%" else ""

    def _row(self, r: RunResult, model: str, scope: str) -> FidelityRow | SimilarityRow | None:
        return r.fidelity_of(model, self.measure, scope, self.scope)


@register_rule_kind
@dataclass(frozen=True)
class SimilarityBound(_TeacherBound):
    kind: ClassVar[str] = "similarity"
    form: ClassVar[str] = "agreement.METRIC>=BOUND (agreement.chrf>=40)"
    prefix: ClassVar[str | None] = "agreement"

    @classmethod
    def _check(cls, text: str, measure: str, percent: bool, where: str | None) -> None:
        from kdeval.similarity import METRICS

        if measure not in METRICS:
            _bad(text, f"agreement.{measure}: graded agreement is one of {', '.join(METRICS)}", where)
        if percent:
            _bad(text, f"agreement.{measure} is on a 0-100 scale: write it without %", where)

    @property
    def value_unit(self) -> str:
        return "pt"

    def _row(self, r: RunResult, model: str, scope: str) -> FidelityRow | SimilarityRow | None:
        return next(
            (
                s
                for s in r.similarity
                if (s.model, s.metric, s.scope) == (model, self.measure, scope)
                and (scope == "overall" or s.name == self.scope)
            ),
            None,
        )
