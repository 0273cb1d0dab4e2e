"""Score stored outputs per example, then aggregate with bootstrap confidence intervals.

Scoring is cheap and pure, so it runs after generation from the stored outputs; this is also
what lets a task score a student against the teacher's answer (conversation without references).

Every model of a task is scored on the same examples: an example that some model cannot be
scored on (no reference, and the teacher is never scored against itself; an empty teacher answer
where it is the reference) is dropped for all of them, so retention, gap closed, agreement and
the gate's paired tests compare like with like. Its per-example records stay, marked `excluded`
with the reason, and the task entry of results.json counts what was dropped and why.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdeval.datafiles import write_atomic
from kdeval.metrics import bootstrap_ci, get_metric, mean_row
from kdeval.results import AgreementRow, GenerationRow, ScoreRow, SimilarityRow, clean
from kdeval.runner import LoadedTask, ModelOutputs
from kdeval.sampling import ks_for, majority, pass_at_k
from kdeval.similarity import METRICS as SIMILARITY
from kdeval.similarity import answer_text, example_rows, similarity_rows
from kdeval.tasks import Output, Scored, Task

N_RESAMPLES = 1000


@dataclass
class TaskScores:
    """One model on one task: metric rows and normalized answers by example id, and the
    per-sample records."""

    rows: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)
    #: example id -> why this model could not be scored on it
    unscored: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    #: per generation (every sample, every stage): what the cost of thinking is counted from
    outputs: list[Output] = field(default_factory=list)
    #: right answers among all samples (binary primary metrics only), for tokens per right answer
    correct: float | None = None


def task_metrics(task: Task, n_samples: int) -> list[str]:
    """The metrics a task reports: its own, plus pass@k and maj@N when it is sampled N times and
    its primary metric says right or wrong (the mean over the samples is its own metric: mean@N)."""
    if n_samples < 2 or not get_metric(task.primary_metric).binary:
        return list(task.metrics)
    return [*task.metrics, *(f"pass@{k}" for k in ks_for(n_samples) if k > 1), f"maj@{n_samples}"]


def score_model(lt: LoadedTask, mo: ModelOutputs, teacher: ModelOutputs | None) -> TaskScores:
    task = lt.task
    chains_of = mo.samples[task.name]
    n = max((len(c) for c in chains_of.values()), default=1)
    ts = TaskScores({m: {} for m in task_metrics(task, n)})
    binary = get_metric(task.primary_metric).binary
    ts.correct = 0.0 if binary else None
    t_outs = teacher.outputs[task.name] if teacher is not None and teacher is not mo else None
    for ex in lt.examples:
        chains = chains_of[ex.id]
        scored = [task.score(ex, chain, t_outs[ex.id] if t_outs else None) for chain in chains]
        first = scored[0]
        unscored = next((s for s in scored if not s.stats), None)
        rows = {} if unscored else _mean_rows([s.stats for s in scored])
        answer = first.answer
        if unscored:
            ts.unscored[ex.id] = unscored.why or "not scored"
            answer = majority([s.answer for s in scored])[0] if len(chains) > 1 else answer
        elif len(chains) > 1:
            answer, rows = _sampled(task, scored, rows)
        for metric, row in rows.items():
            ts.rows.setdefault(metric, {})[ex.id] = row
        ts.answers[ex.id] = answer
        ts.outputs += [o for chain in chains for o in chain if not o.choice_logprobs]
        if ts.correct is not None and not unscored:
            ts.correct += sum(
                get_metric(task.primary_metric).example(s.stats[task.primary_metric]) / 100 for s in scored
            )
        outs = chains[0]
        ts.records.append(
            {
                "id": ex.id,
                "prompt": [o.prompt for o in outs],
                "output": [o.text for o in outs],
                "choice_logprobs": [o.choice_logprobs for o in outs if o.choice_logprobs] or None,
                **_reasoning(outs),
                "answer": answer,
                "references": first.references,
                "scores": {m: get_metric(m).example(r) for m, r in rows.items()},
                # sufficient statistics, so paired tests (the gate) can recompute corpus BLEU/chrF
                "rows": rows,
                **(
                    {"samples": [_sample_record(c, s) for c, s in zip(chains, scored, strict=True)]}
                    if len(chains) > 1
                    else {}
                ),
            }
        )
    return ts


def _mean_rows(stats: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Each metric's row averaged over the samples (the row itself when there is one)."""
    if len(stats) == 1:
        return stats[0]
    return {m: [float(x) for x in np.mean([s[m] for s in stats], axis=0)] for m in stats[0]}


def _sampled(
    task: Task, scored: list[Scored], rows: dict[str, list[float]]
) -> tuple[str, dict[str, list[float]]]:
    """The majority answer, and pass@k / maj@N rows beside the sample means (binary metrics)."""
    answers = [s.answer for s in scored]
    answer, _ = majority(answers)
    metric = get_metric(task.primary_metric)
    if not metric.binary:
        return answer, rows
    right = [metric.example(s.stats[task.primary_metric]) >= 50.0 for s in scored]
    n, c = len(scored), sum(right)
    extra = {f"pass@{k}": mean_row(pass_at_k(n, c, k)) for k in ks_for(n) if k > 1}
    extra[f"maj@{n}"] = mean_row(float(right[answers.index(answer)]))
    return answer, {**rows, **extra}


def _sample_record(chain: list[Output], scored: Scored) -> dict[str, Any]:
    return {
        "output": [o.text for o in chain],
        **_reasoning(chain),
        "answer": scored.answer,
        "scores": {m: get_metric(m).example(r) for m, r in scored.stats.items()},
    }


def _reasoning(outs: list[Output]) -> dict[str, Any]:
    """Thinking traces (and how they ended) and budget hits, when there are any."""
    traces = {"reasoning": [o.reasoning for o in outs]} if any(o.reasoning for o in outs) else {}
    states = {"thinking": [o.thinking for o in outs]} if any(o.thinking for o in outs) else {}
    cut = {"truncated": [o.truncated for o in outs]} if any(o.truncated for o in outs) else {}
    return {**traces, **states, **cut}


def generation_row(model: str, task: str, ts: TaskScores) -> GenerationRow | None:
    """What the answers cost: thinking and answer tokens, unfinished traces and budget hits."""
    outs = ts.outputs
    if not outs:
        return None
    n = len(outs)
    total = sum(o.output_tokens for o in outs)
    thinking = sum(o.reasoning_tokens for o in outs)
    per_right = total / ts.correct if ts.correct else None
    return GenerationRow(
        model=model,
        task=task,
        n=n,
        thinks=sum(1 for o in outs if o.thinking),
        unfinished=sum(1 for o in outs if o.thinking == "open"),
        truncated=sum(1 for o in outs if o.truncated),
        output_tokens=clean(total / n),
        thinking_tokens=clean(thinking / n),
        answer_tokens=clean((total - thinking) / n),
        tokens_per_correct=clean(per_right),
        correct=clean(ts.correct),
    )


def metric_row(model: str, task: str, metric: str, rows: list[list[float]], seed: int) -> ScoreRow:
    m = get_metric(metric)
    if not rows:
        return ScoreRow(model=model, task=task, metric=metric, value=None, ci_low=None, ci_high=None, n=0)
    arr = np.asarray(rows, dtype=np.float64)
    low, high = bootstrap_ci(m, arr, n_resamples=N_RESAMPLES, seed=seed)
    return ScoreRow(
        model=model,
        task=task,
        metric=metric,
        value=clean(m.corpus(arr)),
        ci_low=clean(low),
        ci_high=clean(high),
        n=len(rows),
    )


def agreement_row(
    model: str, reference: str, task: str, mine: dict[str, str], theirs: dict[str, str], seed: int
) -> AgreementRow:
    rows = [mean_row(float(mine[k] == theirs[k])) for k in mine if k in theirs]
    s = metric_row(model, task, "accuracy", rows, seed)
    return AgreementRow(
        model=model, reference=reference, task=task, value=s.value, ci_low=s.ci_low, ci_high=s.ci_high, n=s.n
    )


@dataclass
class Aggregated:
    scores: list[ScoreRow] = field(default_factory=list)
    agreement: list[AgreementRow] = field(default_factory=list)
    samples: dict[str, str] = field(default_factory=dict)
    generation: list[GenerationRow] = field(default_factory=list)
    #: task name -> the metrics it reports (its own, plus pass@k / maj@N when sampled)
    metrics: dict[str, list[str]] = field(default_factory=dict)
    #: task name -> why examples were dropped for every model -> how many (tasks that dropped any)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    #: chrF / ROUGE-L of each student's answers against the teacher's (kdeval.similarity)
    similarity: list[SimilarityRow] = field(default_factory=list)


def aggregate(
    tasks: list[LoadedTask], models: list[ModelOutputs], seed: int, samples_dir: Path
) -> Aggregated:
    """Scores, teacher agreement and the cost of answers for every model and task; writes the
    per-sample files. With several samples, agreement compares the majority answers."""
    teacher = next((m for m in models if m.model.role == "teacher"), None)
    agg = Aggregated()
    scores, agreement, sample_files = agg.scores, agg.agreement, agg.samples
    graded: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for lt in tasks:
        per_model = {mo.name: score_model(lt, mo, teacher) for mo in models}
        common, excluded = common_examples([ex.id for ex in lt.examples], list(per_model.values()))
        if excluded:
            agg.dropped[lt.task.name] = dict(Counter(excluded.values()))
        for mo in models:
            ts = per_model[mo.name]
            names = list(ts.rows)
            agg.metrics[lt.task.name] = max(agg.metrics.get(lt.task.name, []), names, key=len)
            scores += [
                metric_row(mo.name, lt.task.name, m, [ts.rows[m][i] for i in common if i in ts.rows[m]], seed)
                for m in names
            ]
            gen = generation_row(mo.name, lt.task.name, ts)
            if gen is not None:
                agg.generation.append(gen)
            if teacher is not None and mo is not teacher and lt.task.task_type == "generate":
                _graded(graded, lt, mo, teacher, common)
            if teacher is not None and mo is not teacher:
                agreement.append(
                    agreement_row(
                        mo.name,
                        teacher.name,
                        lt.task.name,
                        {i: ts.answers[i] for i in common},
                        per_model[teacher.name].answers,
                        seed,
                    )
                )
            rel = f"samples/{mo.name}/{lt.task.name}.jsonl"
            records = [{**r, "excluded": excluded[r["id"]]} if r["id"] in excluded else r for r in ts.records]
            _write_records(samples_dir.parent / rel, records)
            sample_files[f"{mo.name}/{lt.task.name}"] = rel
    if teacher is not None:
        families = {lt.task.name: lt.task.family for lt in tasks}
        agg.similarity = similarity_rows(graded, teacher.name, families, seed, N_RESAMPLES)
    return agg


def _graded(
    graded: dict[tuple[str, str], dict[str, np.ndarray]],
    lt: LoadedTask,
    mo: ModelOutputs,
    teacher: ModelOutputs,
    common: list[str],
) -> None:
    """chrF / ROUGE-L rows of a student's answers against the teacher's, on the compared examples."""
    mine = [answer_text(mo.outputs[lt.task.name][i]) for i in common]
    theirs = [answer_text(teacher.outputs[lt.task.name][i]) for i in common]
    for metric in SIMILARITY:
        if common:
            graded.setdefault((mo.name, metric), {})[lt.task.name] = example_rows(metric, mine, theirs)


def common_examples(ids: list[str], models: list[TaskScores]) -> tuple[list[str], dict[str, str]]:
    """The examples every model could be scored on, in data order, and the others with why
    (the reason of the first model, in run order, that could not be scored on it).

    >>> a, b = TaskScores(unscored={"x": "no reference answer"}), TaskScores(unscored={"y": "empty"})
    >>> common_examples(["x", "y", "z"], [a, b])
    (['z'], {'x': 'no reference answer', 'y': 'empty'})
    """
    excluded: dict[str, str] = {}
    for i in ids:
        why = next((ts.unscored[i] for ts in models if i in ts.unscored), None)
        if why is not None:
            excluded[i] = why
    return [i for i in ids if i not in excluded], excluded


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
