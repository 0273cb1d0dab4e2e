"""Per-example fidelity rows -> results.json rows with bootstrap intervals.

A task's value is the ratio of its summed rows (every teacher token weighs the same) with the
project's percentile bootstrap over examples (`kdeval.metrics.bootstrap_ci`). A family is the mean
of its tasks and overall the mean of the families, as the quality summary is; their intervals
come from a stratified bootstrap: each task's examples are resampled on their own (the shared
`resample_sums`) and the replicate means taken the same way.
"""

from __future__ import annotations

import math

import numpy as np

from kdeval.fidelity.measures import MEASURES, SUMS, Measure
from kdeval.fidelity.phase import StudentFidelity
from kdeval.metrics import bootstrap_ci, family_means, resample_sums
from kdeval.results import FidelityRow, clean

_TOKENS = SUMS.index("tokens")


def fidelity_rows(
    students: list[StudentFidelity], teacher: str, families: dict[str, str], seed: int, n_resamples: int
) -> list[FidelityRow]:
    """Rows of every student: per task, per family and overall, for every measure."""
    rows: list[FidelityRow] = []
    for sf in students:
        if sf.note is not None:
            rows += [_row(sf, teacher, "overall", "overall", m, None, (None, None), 0, 0) for m in MEASURES]
            continue
        arrays = {t: np.asarray(r, dtype=np.float64) for t, r in sf.rows.items() if r}
        for m in MEASURES.values():
            rows += _task_rows(sf, teacher, m, arrays, seed, n_resamples)
            rows += _pooled_rows(sf, teacher, m, arrays, families, seed, n_resamples)
    return rows


def _row(
    sf: StudentFidelity,
    teacher: str,
    scope: str,
    name: str,
    measure: str,
    value: float | None,
    ci: tuple[float | None, float | None],
    n: int,
    tokens: int,
) -> FidelityRow:
    return FidelityRow.model_validate(
        {
            "model": sf.model,
            "reference": teacher,
            "scope": scope,
            "name": name,
            "measure": measure,
            "value": clean(value),
            "ci_low": clean(ci[0]),
            "ci_high": clean(ci[1]),
            "n": n,
            "tokens": tokens,
            "source": sf.source,
            "note": sf.note,
        }
    )


def _task_rows(
    sf: StudentFidelity, teacher: str, m: Measure, arrays: dict[str, np.ndarray], seed: int, n_resamples: int
) -> list[FidelityRow]:
    out = []
    for task, arr in arrays.items():
        value = m.metric.corpus(arr)
        ci = bootstrap_ci(m.metric, arr, n_resamples=n_resamples, seed=seed)
        out.append(_row(sf, teacher, "task", task, m.name, value, ci, len(arr), int(arr[:, _TOKENS].sum())))
    return out


def _pooled_rows(
    sf: StudentFidelity,
    teacher: str,
    m: Measure,
    arrays: dict[str, np.ndarray],
    families: dict[str, str],
    seed: int,
    n_resamples: int,
) -> list[FidelityRow]:
    """Family means of the task values and the overall mean of the families, with intervals
    from one stratified bootstrap (the same draws for every family and overall)."""
    tasks = [t for t, arr in arrays.items() if not math.isnan(m.metric.corpus(arr))]
    if not tasks:
        return []
    rng = np.random.default_rng(seed)
    reps = np.array(
        [[m.metric.finalize(s) for s in resample_sums([arrays[t]], n_resamples, rng)[0]] for t in tasks]
    )  # (tasks, resamples)
    point = [m.metric.corpus(arrays[t]) for t in tasks]
    fams = [families[t] for t in tasks]
    out = []
    by_family = family_means(point, fams)
    rep_family = family_means(list(reps), fams)
    for fam, value in by_family.items():
        members = [arrays[t] for t in tasks if families[t] == fam]
        out.append(_pooled(sf, teacher, "family", fam, m, value, rep_family[fam], members))
    overall = float(np.mean(list(by_family.values())))
    rep_overall = np.mean(np.stack(list(rep_family.values())), axis=0)
    out.append(_pooled(sf, teacher, "overall", "overall", m, overall, rep_overall, list(arrays.values())))
    return out


def _pooled(
    sf: StudentFidelity,
    teacher: str,
    scope: str,
    name: str,
    m: Measure,
    value: float,
    replicates: np.ndarray,
    members: list[np.ndarray],
) -> FidelityRow:
    finite = replicates[np.isfinite(replicates)]
    lo, hi = (float(x) for x in np.percentile(finite, [2.5, 97.5])) if finite.size else (math.nan, math.nan)
    n = sum(len(a) for a in members)
    tokens = int(sum(a[:, _TOKENS].sum() for a in members))
    return _row(sf, teacher, scope, name, m.name, value, (lo, hi), n, tokens)
