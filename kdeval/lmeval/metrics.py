"""lm-eval's metrics as kdeval metrics: the name is lm-eval's own result key, `METRIC,FILTER`
(`acc,none`, `exact_match,strict-match`), and the per-document rows sum to lm-eval's aggregate.

Only aggregations with sufficient statistics are taken: means (shown on kdeval's 0-100 scale,
lm-eval's value times 100), perplexity, weighted perplexity (word / byte) and bits per byte.
Imports nothing from lm-eval, so a report or a gate reads such runs without the extra.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from kdeval.metrics import Metric, Row, finalize_mean, mean_row


def _mean_row(value: object) -> Row:
    return mean_row(float(value))  # type: ignore[arg-type]


def _ll_row(value: object) -> Row:
    return [float(value), 1.0]  # type: ignore[arg-type]


def _pair_row(value: object) -> Row:
    ll, weight = value  # type: ignore[misc]
    return [float(ll), float(weight)]  # type: ignore[has-type]


def _exp_neg_mean(sums: np.ndarray) -> float:
    return math.exp(-float(sums[0]) / float(sums[1]))


def _bits_per_byte(sums: np.ndarray) -> float:
    return -float(sums[0]) / float(sums[1]) / math.log(2)


#: lm-eval aggregation name -> (per-document value -> row, column sums -> corpus value, higher is better)
_AGGREGATIONS: dict[str, tuple[Callable[[object], Row], Callable[[np.ndarray], float], bool]] = {
    "mean": (_mean_row, finalize_mean, True),
    "perplexity": (_ll_row, _exp_neg_mean, False),
    "weighted_perplexity": (_pair_row, _exp_neg_mean, False),
    "bits_per_byte": (_pair_row, _bits_per_byte, False),
}

#: lm-eval metric -> its aggregation (lm-eval's registry defaults); every other metric is a mean
_BY_METRIC = {
    "perplexity": "perplexity",
    "word_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
}


def is_lmeval_name(name: str) -> bool:
    """lm-eval result keys hold a comma (`acc,none`); kdeval's own metric names never do."""
    return name.count(",") == 1 and all(name.partition(",")[::2])


def aggregation_of(name: str) -> str:
    return _BY_METRIC.get(name.partition(",")[0], "mean")


def supported(aggregation: str) -> bool:
    return aggregation in _AGGREGATIONS


def row(name: str, value: object) -> Row:
    """One document's row for metric `name` from the value lm-eval's process_results gave."""
    return _AGGREGATIONS[aggregation_of(name)][0](value)


def lmeval_metric(name: str) -> Metric:
    _, finalize, higher = _AGGREGATIONS[aggregation_of(name)]
    metric, _, key = name.partition(",")
    return Metric(
        name=name,
        description=f"lm-eval's {metric} ({aggregation_of(name)}), filter {key}",
        stats=_no_text_stats,
        finalize=finalize,
        higher_is_better=higher,
    )


def _no_text_stats(hypothesis: str, references: Sequence[str]) -> Row:
    raise TypeError("lm-eval metrics are scored by lm-eval's process_results, not from text")
