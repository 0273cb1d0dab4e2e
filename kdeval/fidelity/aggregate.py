"""Per-example fidelity rows -> results.json rows: per task, family and overall, each with a 95%
bootstrap interval (`kdeval.pooling`). A task weighs every teacher token the same (its value is
the ratio of its summed rows); a family is the mean of its tasks, overall the mean of families."""

from __future__ import annotations

import numpy as np

from kdeval.fidelity.measures import MEASURES, SUMS
from kdeval.fidelity.phase import StudentFidelity
from kdeval.pooling import Pooled, pooled
from kdeval.results import FidelityRow, clean

_TOKENS = SUMS.index("tokens")


def fidelity_rows(
    students: list[StudentFidelity], teacher: str, families: dict[str, str], seed: int, n_resamples: int
) -> list[FidelityRow]:
    """Rows of every student for every measure; a student with a note gets one empty overall row
    per measure that carries it."""
    rows: list[FidelityRow] = []
    for sf in students:
        if sf.note is not None:
            rows += [_row(sf, teacher, m, None) for m in MEASURES]
            continue
        arrays = {t: np.asarray(r, dtype=np.float64) for t, r in sf.rows.items() if r}
        for m in MEASURES.values():
            rows += [
                _row(sf, teacher, m.name, p) for p in pooled(m.metric, arrays, families, seed, n_resamples)
            ]
    return rows


def _row(sf: StudentFidelity, teacher: str, measure: str, p: Pooled | None) -> FidelityRow:
    return FidelityRow.model_validate(
        {
            "model": sf.model,
            "reference": teacher,
            "scope": p.scope if p else "overall",
            "name": p.name if p else "overall",
            "measure": measure,
            "value": clean(p.value) if p else None,
            "ci_low": clean(p.low) if p else None,
            "ci_high": clean(p.high) if p else None,
            "n": sum(len(a) for a in p.rows) if p else 0,
            "tokens": int(sum(a[:, _TOKENS].sum() for a in p.rows)) if p else 0,
            "source": sf.source,
            "note": sf.note,
        }
    )
