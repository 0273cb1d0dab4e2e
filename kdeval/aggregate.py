"""Score stored outputs per example, then aggregate with bootstrap confidence intervals.

Scoring is cheap and pure, so it runs after generation from the stored outputs; this is also
what lets a task score a student against the teacher's answer (conversation without references).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdeval.datafiles import write_atomic
from kdeval.metrics import bootstrap_ci, get_metric, mean_row
from kdeval.results import AgreementRow, ScoreRow, clean
from kdeval.runner import LoadedTask, ModelOutputs
from kdeval.tasks import Output

N_RESAMPLES = 1000


@dataclass
class TaskScores:
    """One model on one task: metric rows, normalized answers and the per-sample records."""

    rows: dict[str, list[list[float]]] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


def score_model(lt: LoadedTask, mo: ModelOutputs, teacher: ModelOutputs | None) -> TaskScores:
    ts = TaskScores({m: [] for m in lt.task.metrics})
    outs = mo.outputs[lt.task.name]
    t_outs = teacher.outputs[lt.task.name] if teacher is not None and teacher is not mo else None
    for ex in lt.examples:
        scored = lt.task.score(ex, outs[ex.id], t_outs[ex.id] if t_outs else None)
        for metric, row in scored.stats.items():
            ts.rows.setdefault(metric, []).append(row)
        ts.answers[ex.id] = scored.answer
        ts.records.append(
            {
                "id": ex.id,
                "prompt": [o.prompt for o in outs[ex.id]],
                "output": [o.text for o in outs[ex.id]],
                "choice_logprobs": [o.choice_logprobs for o in outs[ex.id] if o.choice_logprobs] or None,
                **_reasoning(outs[ex.id]),
                "answer": scored.answer,
                "references": scored.references,
                "scores": {m: get_metric(m).example(r) for m, r in scored.stats.items()},
                # sufficient statistics, so paired tests (the gate) can recompute corpus BLEU/chrF
                "rows": scored.stats,
            }
        )
    return ts


def _reasoning(outs: list[Output]) -> dict[str, Any]:
    """The traces a server returned apart from the answers, when there are any."""
    return {"reasoning": [o.reasoning for o in outs]} if any(o.reasoning for o in outs) else {}


def metric_row(model: str, task: str, metric: str, rows: list[list[float]], seed: int) -> ScoreRow:
    m = get_metric(metric)
    if not rows:
        return ScoreRow(model, task, metric, None, None, None, 0)
    arr = np.asarray(rows, dtype=np.float64)
    low, high = bootstrap_ci(m, arr, n_resamples=N_RESAMPLES, seed=seed)
    return ScoreRow(model, task, metric, clean(m.corpus(arr)), clean(low), clean(high), len(rows))


def agreement_row(
    model: str, reference: str, task: str, mine: dict[str, str], theirs: dict[str, str], seed: int
) -> AgreementRow:
    rows = [mean_row(float(mine[k] == theirs[k])) for k in mine if k in theirs]
    s = metric_row(model, task, "accuracy", rows, seed)
    return AgreementRow(model, reference, task, s.value, s.ci_low, s.ci_high, s.n)


def aggregate(
    tasks: list[LoadedTask], models: list[ModelOutputs], seed: int, samples_dir: Path
) -> tuple[list[ScoreRow], list[AgreementRow], dict[str, str]]:
    """Scores and teacher agreement for every model and task; writes the per-sample files."""
    teacher = next((m for m in models if m.model.role == "teacher"), None)
    scores: list[ScoreRow] = []
    agreement: list[AgreementRow] = []
    sample_files: dict[str, str] = {}
    for lt in tasks:
        per_model = {mo.name: score_model(lt, mo, teacher) for mo in models}
        for mo in models:
            ts = per_model[mo.name]
            scores += [
                metric_row(mo.name, lt.task.name, m, ts.rows.get(m, []), seed) for m in lt.task.metrics
            ]
            if teacher is not None and mo is not teacher:
                agreement.append(
                    agreement_row(
                        mo.name, teacher.name, lt.task.name, ts.answers, per_model[teacher.name].answers, seed
                    )
                )
            rel = f"samples/{mo.name}/{lt.task.name}.jsonl"
            _write_records(samples_dir.parent / rel, ts.records)
            sample_files[f"{mo.name}/{lt.task.name}"] = rel
    return scores, agreement, sample_files


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
