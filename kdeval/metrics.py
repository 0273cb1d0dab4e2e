"""Metrics as sufficient statistics: per-example rows that sum to a corpus score.

Every metric maps one example (hypothesis, references) to a row of numbers whose column sums
determine the corpus score. Means (accuracy, F1, ROUGE) use the row [value, 1]; BLEU and chrF use
sacrebleu's own segment statistics, so the corpus score equals `sacrebleu.corpus_bleu` /
`corpus_chrf` exactly, and bootstrap intervals can be computed from stored rows alone.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from kdeval.entrypoints import load_target
from kdeval.errors import UserError
from kdeval.metrics_text import (
    _need_refs,
    extract_final_number,
    normalize_answer,
    normalize_text,
    squad_exact_match,
    squad_f1,
)

__all__ = [
    "GROUP",
    "METRICS",
    "Metric",
    "UnknownMetric",
    "bootstrap_ci",
    "combine",
    "extract_final_number",
    "family_means",
    "finalize_mean",
    "close_matches",
    "get_metric",
    "is_known",
    "mean_row",
    "names",
    "normalize_answer",
    "normalize_text",
    "resample_sums",
    "squad_exact_match",
    "squad_f1",
]

Row = list[float]


@dataclass(frozen=True)
class Metric:
    """A corpus metric defined by per-example sufficient statistics (scores on a 0..100 scale).

    stats:       (hypothesis, references) -> one example's row.
    finalize:    column sums of the rows -> corpus score.
    per_example: row -> the value shown for one example; defaults to `finalize` of that row
                 (BLEU overrides it with sentence BLEU, i.e. effective n-gram order).

    >>> m = get_metric("accuracy")
    >>> rows = np.array([m.stats("yes", ["yes"]), m.stats("no", ["yes"])])
    >>> m.corpus(rows), m.example(rows[0])
    (50.0, 100.0)
    """

    name: str
    description: str
    stats: Callable[[str, Sequence[str]], Row]
    finalize: Callable[[np.ndarray], float]
    higher_is_better: bool = True
    per_example: Callable[[np.ndarray], float] | None = None
    #: each example is right or wrong (100 or 0): pass@k and maj@N apply to it (`--samples`)
    binary: bool = False

    def corpus(self, rows: np.ndarray) -> float:
        """Corpus score: `finalize` of the column sums of `rows` (shape (n, k)); nan when n == 0."""
        arr = np.asarray(rows, dtype=np.float64)
        if arr.size == 0:
            return float("nan")
        return float(self.finalize(arr.reshape(len(arr), -1).sum(axis=0)))

    def example(self, row: Sequence[float]) -> float:
        """The per-example value of one row, as shown in per-sample records."""
        fn = self.per_example or self.finalize
        return float(fn(np.asarray(row, dtype=np.float64)))


def mean_row(value: float) -> Row:
    """Row form of a per-example mean metric: [value, 1.0].

    >>> mean_row(0.5)
    [0.5, 1.0]
    """
    return [float(value), 1.0]


def finalize_mean(sums: np.ndarray) -> float:
    """Corpus value of [value, 1] rows on the 0-100 scale (nan when there are none).

    >>> finalize_mean(np.array([3.0, 4.0]))
    75.0
    """
    return 100.0 * float(sums[0]) / float(sums[1]) if sums[1] > 0 else float("nan")


def _accuracy_stats(hypothesis: str, references: Sequence[str]) -> Row:
    _need_refs(references)
    return mean_row(1.0 if hypothesis == references[0] else 0.0)


# --- sacrebleu: BLEU (13a, exp smoothing) and chrF2 (char order 6, word order 0) -----------------


@functools.cache
def _bleu() -> BLEU:
    return BLEU()  # the defaults of sacrebleu.corpus_bleu


@functools.cache
def _chrf() -> CHRF:
    return CHRF()  # the defaults of sacrebleu.corpus_chrf (whitespace excluded)


def _segment_stats(metric: BLEU | CHRF, hypothesis: str, references: Sequence[str]) -> Row:
    _need_refs(references)
    # One segment, one reference stream per reference: exactly what corpus_score computes per line.
    stats: list[Any] = metric._extract_corpus_statistics([hypothesis], [[r] for r in references])
    return [float(x) for x in stats[0]]


def _bleu_stats(hypothesis: str, references: Sequence[str]) -> Row:
    return _segment_stats(_bleu(), hypothesis, references)


def _bleu_score(sums: np.ndarray, effective_order: bool) -> float:
    order = _bleu().max_ngram_order
    ints = [round(float(x)) for x in sums]
    score = BLEU.compute_bleu(
        correct=ints[2 : 2 + order],
        total=ints[2 + order : 2 + 2 * order],
        sys_len=ints[0],
        ref_len=ints[1],
        smooth_method="exp",
        effective_order=effective_order,
        max_ngram_order=order,
    )
    return float(score.score)


def _chrf_stats(hypothesis: str, references: Sequence[str]) -> Row:
    return _segment_stats(_chrf(), hypothesis, references)


def _chrf_score(sums: np.ndarray) -> float:
    return float(_chrf()._compute_f_score([round(float(x)) for x in sums]))


# --- ROUGE (rouge_score, Porter stemmer), max F over references ----------------------------------

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)


@functools.lru_cache(maxsize=4096)
def _rouge_f(hypothesis: str, references: tuple[str, ...]) -> dict[str, float]:
    scores = [_rouge_scorer().score(ref, hypothesis) for ref in references]
    return {t: max(float(s[t].fmeasure) for s in scores) for t in _ROUGE_TYPES}


def _rouge_stats(rouge_type: str) -> Callable[[str, Sequence[str]], Row]:
    def stats(hypothesis: str, references: Sequence[str]) -> Row:
        _need_refs(references)
        return mean_row(_rouge_f(hypothesis, tuple(references))[rouge_type])

    return stats


ACCURACY = Metric(
    "accuracy",
    "Percent of examples whose (task-normalized) answer equals the first reference.",
    _accuracy_stats,
    finalize_mean,
    binary=True,
)
EXACT_MATCH = Metric(
    "exact_match",
    "SQuAD v1.1 exact match, best over references (percent).",
    lambda h, r: mean_row(squad_exact_match(h, r)),
    finalize_mean,
    binary=True,
)
F1 = Metric(
    "f1",
    "SQuAD v1.1 token F1, best over references, averaged over examples (x100).",
    lambda h, r: mean_row(squad_f1(h, r)),
    finalize_mean,
)
BLEU_SCORE = Metric(
    "bleu",
    "sacrebleu corpus BLEU (13a tokenizer, exp smoothing, multi-reference).",
    _bleu_stats,
    lambda s: _bleu_score(s, effective_order=False),
    per_example=lambda s: _bleu_score(s, effective_order=True),
)
CHRF_SCORE = Metric(
    "chrf",
    "sacrebleu corpus chrF2 (char order 6, no word n-grams, best reference per sentence).",
    _chrf_stats,
    _chrf_score,
)


def _rouge(rouge_type: str) -> Metric:
    return Metric(
        rouge_type,
        f"{rouge_type} F-measure (rouge_score, Porter stemmer), max over references, "
        "mean over examples (x100).",
        _rouge_stats(rouge_type),
        finalize_mean,
    )


ROUGE1, ROUGE2, ROUGEL = (_rouge(t) for t in _ROUGE_TYPES)


# -- the registry ------------------------------------------------------------------------------
# One registration per metric: name -> "module:ATTRIBUTE" of a `Metric`, imported on first use.
# A third-party package adds one with an entry point in the group `kdeval.metrics`
# (name = "package.module:METRIC"). pass@k and maj@N are computed names, not registrations.

GROUP = "kdeval.metrics"
_BUILTIN = {
    "accuracy": "kdeval.metrics:ACCURACY",
    "exact_match": "kdeval.metrics:EXACT_MATCH",
    "f1": "kdeval.metrics:F1",
    "bleu": "kdeval.metrics:BLEU_SCORE",
    "chrf": "kdeval.metrics:CHRF_SCORE",
    "rouge1": "kdeval.metrics:ROUGE1",
    "rouge2": "kdeval.metrics:ROUGE2",
    "rougeL": "kdeval.metrics:ROUGEL",
}
_LOADED: dict[str, Metric] = {}


class UnknownMetric(ValueError):
    """A metric name that is neither registered nor computed (pass@k, maj@N)."""


def _third_party() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.name not in _BUILTIN}


def names() -> list[str]:
    """Every registered metric name (built-ins first, then plugins by name); imports nothing."""
    return [*_BUILTIN, *sorted(_third_party())]


def is_known(name: str) -> bool:
    """Whether `name` is a registered metric or a computed one (pass@k, maj@N); imports nothing.

    >>> is_known("chrf"), is_known("pass@4"), is_known("chrF")
    (True, True, False)
    """
    return name in _BUILTIN or _SAMPLED.match(name) is not None or _is_lmeval(name) or name in _third_party()


def _is_lmeval(name: str) -> bool:
    """An lm-eval result key (`acc,none`): a computed name (kdeval.lmeval.metrics)."""
    from kdeval.lmeval.metrics import is_lmeval_name

    return is_lmeval_name(name)


def close_matches(name: str) -> list[str]:
    """Registered names close to `name`, for "did you mean" hints.

    >>> close_matches("rougel")
    ['rougeL', 'rouge2', 'rouge1']
    """
    lowered = {n.lower(): n for n in names()}
    exact = [lowered[name.lower()]] if name.lower() in lowered else []
    rest = difflib.get_close_matches(name, names(), n=3)
    return [*exact, *(n for n in rest if n not in exact)][:3]


def _load(name: str, target: str) -> Metric:
    metric = load_target("metric", name, target, builtin=name in _BUILTIN)
    if not isinstance(metric, Metric):
        raise UserError(f"metric plugin '{name}' ({target}) is not a kdeval.metrics.Metric")
    if metric.name != name:
        raise UserError(f"metric plugin '{name}' ({target}) is a Metric named '{metric.name}'")
    return metric


def get_metric(name: str) -> Metric:
    """The metric called `name` (imported on first use); UnknownMetric (a ValueError) listing the
    known names otherwise.

    >>> get_metric("bleu").name
    'bleu'
    >>> get_metric("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kdeval.metrics.UnknownMetric: unknown metric 'nope'; known: accuracy, bleu, chrf, exact_match, f1, ...
    """
    if name in _LOADED:
        return _LOADED[name]
    target = _BUILTIN.get(name)
    if target is None and _is_lmeval(name):
        from kdeval.lmeval.metrics import lmeval_metric

        _LOADED[name] = metric = lmeval_metric(name)
        return metric
    if target is None:
        sampled = _sampled_metric(name)
        if sampled is not None:
            return sampled
        target = _third_party().get(name)
    if target is None:
        raise UnknownMetric(f"unknown metric {name!r}; known: {', '.join(sorted(names()))}")
    _LOADED[name] = metric = _load(name, target)
    return metric


class _Registered(Mapping[str, Metric]):
    """`METRICS`: the registered metrics as a read-only mapping (computed names excluded)."""

    def __getitem__(self, name: str) -> Metric:
        if name not in _BUILTIN and name not in _third_party():
            raise KeyError(name)
        return get_metric(name)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in _BUILTIN or name in _third_party())


METRICS: Mapping[str, Metric] = _Registered()


_SAMPLED = re.compile(r"^(pass|maj)@([1-9][0-9]*)$")


def _sampled_metric(name: str) -> Metric | None:
    """pass@k and maj@N over `--samples N` (kdeval.sampling): per-example means, like accuracy."""
    m = _SAMPLED.match(name)
    if m is None:
        return None
    kind, k = m.group(1), int(m.group(2))
    what = (
        f"unbiased pass@{k} (Chen et al. 2021) from the correct share of the samples, mean over examples"
        if kind == "pass"
        else f"the majority answer of {k} samples is right (first in sample order on ties), percent"
    )
    return Metric(name, what, lambda h, r: mean_row(0.0), finalize_mean, binary=True)


def family_means(values: Sequence[Any], families: Sequence[str]) -> dict[str, Any]:
    """Mean of each family's values, families in order of first appearance (floats or arrays).

    >>> family_means([80.0, 60.0, 40.0], ["qa", "qa", "math"])
    {'qa': 70.0, 'math': 40.0}
    """
    groups: dict[str, list[Any]] = {}
    for v, f in zip(values, families, strict=True):
        groups.setdefault(f, []).append(v)
    return {f: sum(vs) / len(vs) for f, vs in groups.items()}


def combine(values: Sequence[Any], families: Sequence[str]) -> Any:
    """Mean over families of the mean over each family's tasks: how a family, `overall`, the
    report's summary, the gate and the leaderboard all pool tasks (works on floats or arrays).

    >>> combine([80.0, 60.0, 40.0], ["qa", "qa", "math"])
    55.0
    """
    means = list(family_means(values, families).values())
    return sum(means) / len(means)


def resample_sums(
    arrays: Sequence[np.ndarray], n_resamples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Column sums of `n_resamples` bootstrap resamples of the examples (rows): each resample
    draws n rows with replacement, the same draws for every array, so arrays whose row i is the
    same example (two models' arms) stay paired. Returns one (n_resamples, k) array per array.

    The one bootstrap of kdeval: the report's intervals (`bootstrap_ci`) and the gate's paired
    tests (`kdeval.gate.stats.bootstrap`) both resample through it.

    >>> a = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> sums = resample_sums([a, a], 3, np.random.default_rng(0))
    >>> bool((sums[0] == sums[1]).all()), sums[0].shape, bool((sums[0][:, 1] == 2).all())
    (True, (3, 2), True)
    """
    n = len(arrays[0])
    out = [np.empty((n_resamples, a.shape[1])) for a in arrays]
    # Chunk the replicates so rows[idx] stays around 32 MiB; the chunk size depends only on the
    # data's shape, so the result is still a function of (rows, seed).
    chunk = max(1, min(n_resamples, (1 << 22) // max(1, n * arrays[0].shape[1])))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        for a, sums in zip(arrays, out, strict=True):
            sums[start:stop] = a[idx].sum(axis=1)
    return out


def bootstrap_ci(
    metric: Metric,
    rows: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric.corpus(rows)`, resampling examples (rows).

    Deterministic for a given seed. One example or identical rows give (value, value); no rows
    give (nan, nan).

    >>> m = get_metric("accuracy")
    >>> rows = np.array([mean_row(x) for x in [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]])
    >>> lo, hi = bootstrap_ci(m, rows, seed=1)
    >>> lo < m.corpus(rows) < hi
    True
    >>> bootstrap_ci(m, rows[:1])
    (100.0, 100.0)
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    arr = np.asarray(rows, dtype=np.float64)
    n = len(arr)
    if n == 0:
        return (float("nan"), float("nan"))
    arr = arr.reshape(n, -1)
    point = metric.corpus(arr)
    if n == 1 or bool(np.all(arr == arr[0])):
        return (point, point)
    (sums,) = resample_sums([arr], n_resamples, np.random.default_rng(seed))
    replicates = np.array([metric.finalize(s) for s in sums], dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(replicates, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return (float(lo), float(hi))
