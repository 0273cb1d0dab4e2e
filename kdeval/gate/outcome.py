"""What evaluating one gate rule gives: its `Outcome`, and the `Options` every rule sees.

Kept apart from `kdeval.gate.run` (which loads runs and the statistics) so that rule kinds
(`kdeval.gate.rules`) can build outcomes without importing the machinery that evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from kdeval.gate.rules import Rule

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


class NoData(Exception):
    """Raised by `Rule.evaluate` when the runs lack what the rule needs; the message says why.

    The gate turns it into a 'no data' outcome (exit 2 unless another rule fails)."""


def no_data(rule: Rule, why: str) -> Outcome:
    return Outcome(rule, "no data", None, None, None, None, None, rule.value_unit, None, "", None, why)
