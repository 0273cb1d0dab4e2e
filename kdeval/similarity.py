"""Graded teacher–student similarity on free text: chrF and ROUGE-L of each student's answer
against the teacher's answer to the same prompt (generation tasks only).

Exact answer agreement says little on summarization or conversation (two fluent answers almost
never match to the character); these say how close the student's text is to the teacher's. The
per-example rows are the metrics' own sufficient statistics (`kdeval.metrics`), so the corpus
chrF equals sacrebleu's and the intervals come from the project's bootstrap (`kdeval.pooling`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdeval.metrics import get_metric
from kdeval.pooling import pooled
from kdeval.results import SimilarityRow, clean
from kdeval.tasks import Output

#: the graded similarities, by kdeval metric name (gate: agreement.chrf, agreement.rougeL)
METRICS = ("chrf", "rougeL")


def answer_text(outputs: Sequence[Output]) -> str:
    """One model's whole answer to an example: every turn's answer, one per line."""
    return "\n".join(o.text for o in outputs)


def example_rows(metric: str, mine: Sequence[str], teachers: Sequence[str]) -> np.ndarray:
    """Sufficient-statistics rows of `metric` for each (student answer, teacher answer) pair.

    >>> example_rows("chrf", ["the cat sat"], ["the cat sat"]).shape[0]
    1
    """
    m = get_metric(metric)
    return np.array([m.stats(h, [r]) for h, r in zip(mine, teachers, strict=True)], dtype=np.float64)


def similarity_rows(
    rows: dict[tuple[str, str], dict[str, np.ndarray]],
    teacher: str,
    families: dict[str, str],
    seed: int,
    n_resamples: int,
) -> list[SimilarityRow]:
    """(model, metric) -> task -> rows  ->  rows per task, family and overall with intervals."""
    out = []
    for (model, metric), arrays in rows.items():
        for p in pooled(get_metric(metric), arrays, families, seed, n_resamples):
            out.append(
                SimilarityRow(
                    model=model,
                    reference=teacher,
                    scope=p.scope,  # type: ignore[arg-type]
                    name=p.name,
                    metric=metric,
                    value=clean(p.value),
                    ci_low=clean(p.low),
                    ci_high=clean(p.high),
                    n=sum(len(a) for a in p.rows),
                )
            )
    return out
