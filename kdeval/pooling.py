"""One metric over tasks, families and overall, each with a 95% bootstrap interval.

A task's value is its metric over its examples' rows (`Metric.corpus`), with the percentile
bootstrap of `kdeval.metrics.bootstrap_ci`. A family is the mean of its tasks and overall the mean
of the families, as the quality summary pools; their intervals come from a bootstrap stratified by
task: each task's examples are resampled on their own (the shared `resample_sums`) and the
replicates pooled the same way. Used by the fidelity phase and the graded teacher similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdeval.metrics import Metric, bootstrap_ci, family_means, resample_sums


@dataclass(frozen=True)
class Pooled:
    scope: str  # "task", "family" or "overall"
    name: str
    value: float
    low: float
    high: float
    rows: list[np.ndarray]  # the examples' rows it pools (one array per task)


def pooled(
    metric: Metric, arrays: dict[str, np.ndarray], families: dict[str, str], seed: int, n_resamples: int
) -> list[Pooled]:
    """Every task with rows, then each family and overall (tasks whose value is undefined left out).

    >>> from kdeval.metrics import get_metric, mean_row
    >>> rows = {t: np.array([mean_row(x) for x in v]) for t, v in {"a": [1, 1], "b": [0, 1]}.items()}
    >>> got = pooled(get_metric("accuracy"), rows, {"a": "f", "b": "f"}, seed=0, n_resamples=50)
    >>> [(p.scope, p.name, p.value) for p in got]
    [('task', 'a', 100.0), ('task', 'b', 50.0), ('family', 'f', 75.0), ('overall', 'overall', 75.0)]
    """
    out = []
    for task, arr in arrays.items():
        lo, hi = bootstrap_ci(metric, arr, n_resamples=n_resamples, seed=seed)
        out.append(Pooled("task", task, metric.corpus(arr), lo, hi, [arr]))
    tasks = [p.name for p in out if not math.isnan(p.value)]
    if not tasks:
        return out
    rng = np.random.default_rng(seed)
    reps = [
        np.array([metric.finalize(s) for s in resample_sums([arrays[t]], n_resamples, rng)[0]]) for t in tasks
    ]
    fams = [families[t] for t in tasks]
    points = family_means([metric.corpus(arrays[t]) for t in tasks], fams)
    spread = family_means(reps, fams)
    for fam, value in points.items():
        members = [arrays[t] for t in tasks if families[t] == fam]
        out.append(Pooled("family", fam, value, *_interval(spread[fam]), members))
    overall = np.mean(np.stack(list(spread.values())), axis=0)
    value = float(np.mean(list(points.values())))
    out.append(Pooled("overall", "overall", value, *_interval(overall), [arrays[t] for t in tasks]))
    return out


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return (float(lo), float(hi))
