"""Paired tests on the same examples: is a difference between two arms real or noise?

The arms are the baseline and the candidate run of one model, or the teacher and the distilled
student of one run (retention). Both were scored on the same examples, so the tests are paired
(an unpaired test would waste most of the power; see lm-eval issue #3831):

* McNemar's exact test, for one task whose per-example metric is right/wrong (accuracy, exact
  match): with no real change the discordant examples split 50/50, so the number the candidate
  newly gets wrong is Binomial(discordant, 1/2). Exact, from `math.comb` (no scipy needed).
* The paired bootstrap otherwise (Koehn 2004; what sacrebleu's `--paired-bs` does): resample the
  examples of each task, the same draw for both arms (`kdeval.metrics.resample_sums`, the
  resampling the report's intervals use too), and recompute the corpus metric from the
  per-example sufficient statistics, so BLEU and chrF are corpus scores, not sentence means. A
  family or `overall` is the mean over families of the mean over tasks (`kdeval.metrics.combine`),
  as in the report.

All p-values are one-sided, for "the candidate is worse": a gate only asks about drops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdeval.errors import UserError
from kdeval.metrics import combine, finalize_mean, get_metric, resample_sums

Finalize = Callable[[np.ndarray], float]
#: resamples of the gate's paired bootstrap (the report's intervals use kdeval.aggregate's 1,000)
N_RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Part:
    """One task's metric for both arms; row i of `a` and of `b` is the same example."""

    task: str
    family: str
    finalize: Finalize
    a: np.ndarray  # (n, k) sufficient-statistics rows
    b: np.ndarray
    exact: bool  # False: rows rebuilt from per-example display scores (BLEU/chrF approximate)

    @property
    def binary(self) -> bool:
        """Right/wrong per example in both arms: mean rows whose value is 0 or 1."""
        return all(
            x.shape[1] == 2 and bool(np.all(x[:, 1] == 1)) and bool(np.all((x[:, 0] == 0) | (x[:, 0] == 1)))
            for x in (self.a, self.b)
        )


def part_from_records(
    task: str,
    family: str,
    metric: str,
    a: dict[str, dict[str, Any]],
    b: dict[str, dict[str, Any]],
    where: str,
) -> Part:
    """Pair two arms' per-example records by id. Uses the stored sufficient statistics
    (`record["rows"]`) when both arms have them, else per-example means of `record["scores"]`.

    Only examples scored in both arms are paired: a record marked `excluded` (an example some
    model of its run could not be scored on) or with no scores at all (runs written before
    examples were marked) is left out of both arms."""
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))[:3]
        raise UserError(
            f"{task}: the two runs scored different examples (e.g. {', '.join(only)})",
            where=where,
            fix="compare runs made on the same data with the same --limit",
        )
    ids = [i for i in sorted(a) if scored(a[i]) and scored(b[i])]
    if not ids:
        raise UserError(
            f"{task}: no example was scored in both arms",
            where=where,
            fix="check that the task has references (or a teacher that answers) for its examples",
        )
    try:
        if all("rows" in r and metric in r["rows"] for r in (*a.values(), *b.values())):
            rows_a = np.array([a[i]["rows"][metric] for i in ids], dtype=np.float64)
            rows_b = np.array([b[i]["rows"][metric] for i in ids], dtype=np.float64)
            return Part(task, family, get_metric(metric).finalize, rows_a, rows_b, True)
        means_a = np.array([[a[i]["scores"][metric] / 100, 1.0] for i in ids], dtype=np.float64)
        means_b = np.array([[b[i]["scores"][metric] / 100, 1.0] for i in ids], dtype=np.float64)
    except (KeyError, TypeError):
        raise UserError(
            f"{task}: per-example records lack metric '{metric}'", where=where, fix="re-run kdeval compare"
        ) from None
    return Part(task, family, finalize_mean, means_a, means_b, False)


def scored(record: dict[str, Any]) -> bool:
    """Whether a per-example record counts: not dropped from its run's comparisons, and scored.

    >>> scored({"scores": {"chrf": 40.0}}), scored({"scores": {}})
    (True, False)
    >>> scored({"scores": {"chrf": 1.0}, "excluded": "no reference answer"})
    False
    """
    return not record.get("excluded") and bool(record.get("scores") or record.get("rows"))


@dataclass(frozen=True)
class Estimate:
    """Both arms' scope values and their bootstrap replicates (the same resamples for both)."""

    a: float
    b: float
    a_reps: np.ndarray
    b_reps: np.ndarray
    n: int


def bootstrap(parts: Sequence[Part], n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Estimate:
    """Paired bootstrap of the scope value, resampling examples within each task."""
    rng = np.random.default_rng(seed)
    fams = [p.family for p in parts]
    point_a = combine([p.finalize(p.a.sum(axis=0)) for p in parts], fams)
    point_b = combine([p.finalize(p.b.sum(axis=0)) for p in parts], fams)
    reps = [_replicates(p, rng, n_resamples) for p in parts]
    return Estimate(
        float(point_a),
        float(point_b),
        combine([r[0] for r in reps], fams),
        combine([r[1] for r in reps], fams),
        sum(len(p.a) for p in parts),
    )


def _replicates(p: Part, rng: np.random.Generator, n_resamples: int) -> tuple[np.ndarray, np.ndarray]:
    sums_a, sums_b = resample_sums([p.a, p.b], n_resamples, rng)  # one draw for both arms: paired
    return (
        np.array([p.finalize(s) for s in sums_a], dtype=np.float64),
        np.array([p.finalize(s) for s in sums_b], dtype=np.float64),
    )


def mcnemar_exact(worse: int, better: int) -> float:
    """One-sided exact McNemar: P(X >= worse) for X ~ Binomial(worse + better, 1/2).

    `worse`: examples right in the baseline and wrong in the candidate; `better`: the reverse.

    >>> mcnemar_exact(5, 0)
    0.03125
    >>> mcnemar_exact(3, 3)
    0.65625
    >>> mcnemar_exact(0, 4)
    1.0
    """
    n = worse + better
    if worse == 0:
        return 1.0
    if n <= 5000:
        term, total = math.comb(n, worse), 0
        for k in range(worse, n + 1):  # C(n, k+1) = C(n, k) * (n - k) / (k + 1), exactly
            total += term
            term = term * (n - k) // (k + 1)
        return min(1.0, total / 2**n)
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(worse, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top + math.log(sum(math.exp(x - top) for x in logs)) - n * math.log(2)))


def discordant(p: Part) -> tuple[int, int]:
    """(right in a, wrong in b; wrong in a, right in b) for a binary part."""
    a, b = p.a[:, 0] == 1, p.b[:, 0] == 1
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def p_below(observed: float, reps: np.ndarray, null: float = 0.0) -> float:
    """Bootstrap p-value for "the true value is below `null`": the replicates, shifted to be
    centred on `null`, fall at or below the observed value this often.

    >>> p_below(0.0, np.zeros(99))
    1.0
    >>> p_below(-5.0, np.random.default_rng(0).normal(-5.0, 1.0, 999)) < 0.01
    True
    """
    finite = reps[np.isfinite(reps)]
    if finite.size == 0 or not math.isfinite(observed):
        return float("nan")
    shifted = finite - finite.mean() + null
    return float((1 + np.sum(shifted <= observed + 1e-12)) / (finite.size + 1))


def interval(reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the replicates (nan when none is finite)."""
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))
