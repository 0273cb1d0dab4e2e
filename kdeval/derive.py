"""The numbers derived from a run's scores: per-family and overall means (`summary`) and the
distilled student against the teacher and baseline (`comparisons`: retention, gap closed,
agreement). They depend on the scores alone, so `kdeval compare` and `kdeval report` give the
same numbers, and a report re-rendered from results.json never runs a model.
"""

from __future__ import annotations

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


def ratios(
    teacher: float | None, baseline: float | None, distilled: float | None, *, has_teacher: bool = True
) -> tuple[float | None, float | None, list[str]]:
    """Retention = distilled/teacher; gap closed = (distilled-baseline)/(teacher-baseline).

    >>> ratios(80.0, 60.0, 75.0)
    (0.9375, 0.75, [])
    >>> ratios(None, 60.0, 75.0, has_teacher=False)
    (None, None, ['no-teacher'])
    >>> ratios(None, 60.0, 75.0)  # a teacher ran but has no score (e.g. no references)
    (None, None, ['teacher-unscored'])
    >>> ratios(70.0, 70.0, 75.0)[1:]
    (None, ['zero-gap'])
    """
    notes: list[str] = []
    if distilled is None:
        return None, None, ["no-distilled"]
    if teacher is None:
        return None, None, ["teacher-unscored" if has_teacher else "no-teacher"]
    retention = distilled / teacher if teacher != 0 else None
    if teacher == 0:
        notes.append("zero-teacher")
    gap = None
    if baseline is None:
        notes.append("no-baseline")
    elif abs(teacher - baseline) < 1e-12:
        notes.append("zero-gap")
    else:
        gap = (distilled - baseline) / (teacher - baseline)
    return retention, gap, notes


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

    def comparison(scope: Scope, name: str, metric: str, get: Any, tasks: list[str]) -> Comparison:
        ret, gap, notes = ratios(val(t, get), val(b, get), val(d, get), has_teacher=t is not None)
        return Comparison(
            scope=scope, name=name, metric=metric, retention=ret, gap_closed=gap, agreement=agree(tasks),
            notes=notes,
        )  # fmt: skip

    for task in r.tasks:
        for metric in task.metrics:

            def get(m: str, task: TaskRow = task, metric: str = metric) -> float | None:
                return r.value(m, task.name, metric)

            out.append(comparison("task", task.name, metric, get, [task.name]))
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
