"""The gate's fidelity rules: a bound on a student's token-level fidelity to its teacher.

``fidelity.MEASURE<=BOUND`` / ``fidelity.MEASURE>=BOUND`` on the candidate run's `fidelity` rows
(kdeval.fidelity), overall by default or ``fidelity.SCOPE.MEASURE`` for a task or family:
``fidelity.kl<=0.8``, ``fidelity.top1>=60%``, ``fidelity.qa.jsd<=0.1``. MEASURE is one of kl,
rkl, jsd, nll, ppl (lower is better), top1, ece (in %). The interval shown is the row's own 95%
bootstrap interval, less the bound. A student with no numbers (e.g. tokenizers differ) is
'no data', never a pass.

>>> FidelityBound.parse("fidelity.top1>=60%")
FidelityBound(text='fidelity.top1>=60%', scope='overall', measure='top1', op='>=', bound=60.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from kdeval.gate.outcome import NoData, Outcome
from kdeval.gate.rules import Rule, _bad, register_rule_kind

if TYPE_CHECKING:
    from kdeval.gate.run import Context

_FORM = re.compile(r"^fidelity\.(?:(?P<scope>[A-Za-z0-9_\-]+)\.)?(?P<measure>\w+)\s*(?P<op>>=|<=)\s*"
                   r"(?P<bound>-?\d+(?:\.\d+)?)\s*(?P<pct>%?)$")  # fmt: skip


@register_rule_kind
@dataclass(frozen=True)
class FidelityBound(Rule):
    kind: ClassVar[str] = "fidelity"
    form: ClassVar[str] = "fidelity.MEASURE<=BOUND (fidelity.kl<=0.8, fidelity.top1>=60%)"
    prefix: ClassVar[str | None] = "fidelity"
    text: str
    scope: str
    measure: str
    op: Literal[">=", "<="]
    bound: float

    @classmethod
    def parse(cls, text: str, where: str | None = None) -> FidelityBound | None:
        from kdeval.fidelity.measures import MEASURES

        m = _FORM.match(text.strip())
        if m is None:
            return None
        measure = m["measure"]
        if measure not in MEASURES:
            _bad(text, f"unknown fidelity measure '{measure}' (known: {', '.join(MEASURES)})", where)
        if m["pct"] and MEASURES[measure].unit != "%":
            _bad(text, f"fidelity.{measure} is in {MEASURES[measure].unit or 'plain numbers'}, not %", where)
        op: Literal[">=", "<="] = ">=" if m["op"] == ">=" else "<="
        return cls(text.strip(), m["scope"] or "overall", measure, op, float(m["bound"]))

    @property
    def value_unit(self) -> str:
        from kdeval.fidelity.measures import MEASURES

        return "%" if MEASURES[self.measure].unit == "%" else ""

    def evaluate(self, ctx: Context) -> Outcome:
        r = ctx.cand.result
        scope = (
            "overall"
            if self.scope == "overall"
            else "task"
            if self.scope in {t.name for t in r.tasks}
            else "family"
        )
        row = r.fidelity_of(ctx.mb, self.measure, scope, self.scope)
        if row is None:
            raise NoData(f"the candidate run has no fidelity.{self.measure} for '{ctx.mb}' at {self.scope} "
                         "(run `kdeval compare` with a teacher, without --no-fidelity)")  # fmt: skip
        if row.value is None:
            raise NoData(f"'{ctx.mb}' has no fidelity numbers: {row.note or 'not computed'}")
        above = self.op == ">="
        ok = row.value >= self.bound if above else row.value <= self.bound
        low = None if row.ci_low is None else row.ci_low - self.bound
        high = None if row.ci_high is None else row.ci_high - self.bound
        side = "at or above" if above else "at or below"
        reason = f"{side} the bound {self.bound:g}" if ok else f"not {side} the bound {self.bound:g}"
        test = f"bootstrap interval ({row.source} teacher)"
        status: Literal["pass", "fail"] = "pass" if ok else "fail"
        unit = "pt" if self.value_unit == "%" else ""  # a difference of percentages is in points
        return Outcome(self, status, None, row.value, row.value - self.bound, low, high, unit,
                       None, test, row.n, reason)  # fmt: skip

    def baseline_cell(self, o: Outcome) -> str:
        return f"{self.op} {self.bound:g}"

    def values(self, o: Outcome) -> str:
        from kdeval.gate.render import number

        return f"{number(o.candidate, self.value_unit)} (bound {self.bound:g})"
