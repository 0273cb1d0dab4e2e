"""The numbers derived from a run's scores: per-family and overall means (`summary`) and the
distilled student against the teacher and baseline (`comparisons`: retention, gap closed,
agreement). They depend on the scores alone, so `kdeval compare` and `kdeval report` give the
same numbers, and a report re-rendered from results.json never runs a model.
"""

from __future__ import annotations

import math
from typing import Any

from kdeval.metrics import combine, family_means
from kdeval.results import Comparison, Pooled, RunResult, Scope, SummaryRow, TaskRow


def derive(result: RunResult) -> None:
    """Fill `summary` and `comparisons` from `scores` and `agreement`."""
    result.summary = _summaries(result)
    result.comparisons = _comparisons(result)


def _summaries(r: RunResult) -> list[SummaryRow]:
    rows = []
    for m in r.models:
        known = [
            (v, t.family) for t in r.tasks if (v := r.value(m.name, t.name, t.primary_metric)) is not None
        ]
        if not known:
            continue
        values, families = [v for v, _ in known], [f for _, f in known]
        fams = family_means(values, families)
        rows += [SummaryRow(model=m.name, scope="family", name=f, value=v) for f, v in fams.items()]
        rows.append(
            SummaryRow(model=m.name, scope="overall", name="overall", value=combine(values, families))
        )
    return rows


Interval = tuple[float | None, float | None] | None


def ratios(
    teacher: float | None,
    baseline: float | None,
    distilled: float | None,
    *,
    has_teacher: bool = True,
    teacher_ci: Interval = None,
    baseline_ci: Interval = None,
) -> tuple[float | None, float | None, list[str]]:
    """Retention = distilled/teacher; gap closed = (distilled-baseline)/(teacher-baseline).

    A ratio whose denominator is within its own 95% interval of zero is noise divided by noise
    (a teacher at 1 ± 2 gives retentions like -800%): it is None, with the note
    'teacher-near-zero' or 'gap-near-zero'. The teacher's interval is its score's (scores[]);
    the gap's is `gap_interval`. Without intervals (family and overall means) no such check.

    >>> ratios(80.0, 60.0, 75.0)
    (0.9375, 0.75, [])
    >>> ratios(None, 60.0, 75.0, has_teacher=False)
    (None, None, ['no-teacher'])
    >>> ratios(None, 60.0, 75.0)  # a teacher ran but has no score (e.g. no references)
    (None, None, ['teacher-unscored'])
    >>> ratios(70.0, 70.0, 75.0)[1:]
    (None, ['zero-gap'])
    >>> ratios(1.0, 0.5, 8.0, teacher_ci=(0.0, 3.0), baseline_ci=(0.0, 1.5))
    (None, None, ['teacher-near-zero', 'gap-near-zero'])
    >>> ratios(80.0, 60.0, 75.0, teacher_ci=(75.0, 85.0), baseline_ci=(55.0, 65.0))
    (0.9375, 0.75, [])
    """
    notes: list[str] = []
    if distilled is None:
        return None, None, ["no-distilled"]
    if teacher is None:
        return None, None, ["teacher-unscored" if has_teacher else "no-teacher"]
    retention = None
    if teacher == 0:
        notes.append("zero-teacher")
    elif _spans_zero(teacher_ci):
        notes.append("teacher-near-zero")
    else:
        retention = distilled / teacher
    gap = None
    if baseline is None:
        notes.append("no-baseline")
    elif abs(teacher - baseline) < 1e-12:
        notes.append("zero-gap")
    elif _spans_zero(gap_interval(teacher, teacher_ci, baseline, baseline_ci)):
        notes.append("gap-near-zero")
    else:
        gap = (distilled - baseline) / (teacher - baseline)
    return retention, gap, notes


def gap_interval(teacher: float, teacher_ci: Interval, baseline: float, baseline_ci: Interval) -> Interval:
    """A 95% interval for teacher - baseline from the two scores' own intervals, combined as for
    independent errors: each side's distance from the point estimate is the root sum of squares
    of the matching sides of the two intervals. It needs only scores[] (so `kdeval report` gives
    the same answer from results.json). Both models answer the same examples, so their errors
    usually correlate positively and a paired bootstrap over the per-example rows would give a
    narrower interval: this one is the conservative choice (it calls a gap noise at least as often).

    >>> gap_interval(60.0, (52.0, 63.0), 30.0, (26.0, 36.0))  # 30 - hypot(8, 6), 30 + hypot(3, 4)
    (20.0, 35.0)
    >>> gap_interval(60.0, None, 30.0, (26.0, 36.0)) is None
    True
    """
    if teacher_ci is None or baseline_ci is None or None in teacher_ci or None in baseline_ci:
        return None
    (t_lo, t_hi), (b_lo, b_hi) = teacher_ci, baseline_ci
    assert t_lo is not None and t_hi is not None and b_lo is not None and b_hi is not None
    d = teacher - baseline
    below = math.hypot(teacher - t_lo, b_hi - baseline)
    above = math.hypot(t_hi - teacher, baseline - b_lo)
    return (d - below, d + above)


def _spans_zero(ci: Interval) -> bool:
    """Whether an interval holds zero (an interval not known holds nothing)."""
    if ci is None or ci[0] is None or ci[1] is None:
        return False
    return ci[0] <= 0.0 <= ci[1]


def _comparisons(r: RunResult) -> list[Comparison]:
    t, b, d = r.role("teacher"), r.role("baseline"), r.role("distilled")
    out = []

    def val(model: str | None, get: Any) -> float | None:
        return None if model is None else get(model)

    def agree(task_names: list[str]) -> float | None:
        # agreement rows are on the 0-100 scale of scores; comparisons hold fractions
        vals = [
            a.value / 100
            for a in r.agreement
            if a.model == d and a.reference == t and a.task in task_names and a.value is not None
        ]
        return sum(vals) / len(vals) if vals and len(vals) == len(task_names) else None

    def comparison(
        scope: Scope, name: str, metric: str, get: Any, tasks: list[str], ci: Any = lambda m: None
    ) -> Comparison:
        ret, gap, notes = ratios(
            val(t, get), val(b, get), val(d, get), has_teacher=t is not None,
            teacher_ci=None if t is None else ci(t), baseline_ci=None if b is None else ci(b),
        )  # fmt: skip
        return Comparison(
            scope=scope, name=name, metric=metric, retention=ret, gap_closed=gap, agreement=agree(tasks),
            notes=notes,
        )  # fmt: skip

    for task in r.tasks:
        for metric in task.metrics:

            def get(m: str, task: TaskRow = task, metric: str = metric) -> float | None:
                return r.value(m, task.name, metric)

            def ci(m: str, task: TaskRow = task, metric: str = metric) -> Interval:
                row = next(
                    (s for s in r.scores if (s.model, s.task, s.metric) == (m, task.name, metric)), None
                )
                return None if row is None else (row.ci_low, row.ci_high)

            out.append(comparison("task", task.name, metric, get, [task.name], ci))
    pooled: tuple[Pooled, ...] = ("family", "overall")
    for scope in pooled:
        names = sorted({s.name for s in r.summary if s.scope == scope}, key=_family_order(r))
        for name in names:

            def sget(m: str, scope: str = scope, name: str = name) -> float | None:
                return next(
                    (s.value for s in r.summary if (s.model, s.scope, s.name) == (m, scope, name)), None
                )

            tasks = [x.name for x in r.tasks if scope == "overall" or x.family == name]
            out.append(comparison(scope, name, "primary", sget, tasks))
    return out


def _family_order(r: RunResult) -> Any:
    order = list(dict.fromkeys(t.family for t in r.tasks))
    return lambda name: order.index(name) if name in order else len(order)
