"""The results.json schema (versioned) and the numbers derived from scores.

Everything the report shows comes from a `RunResult`; `derive()` computes the summary rows
and the teacher comparisons from the per-task scores alone, so `kdeval report` and any later
consumer (gate, leaderboard) get the same numbers without running a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdeval.datafiles import read_json, write_atomic
from kdeval.errors import UserError

SCHEMA = "kdeval.results"
SCHEMA_VERSION = 1


@dataclass
class ScoreRow:
    model: str
    task: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass
class AgreementRow:
    """Share of examples where `model` gives the same normalized answer as `reference`."""

    model: str
    reference: str
    task: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass
class GenerationRow:
    """What one model's answers to one task cost (every sample and stage of its generations).

    thinks / unfinished: generations with a thinking trace / whose trace never closed (no answer).
    truncated: generations that ran out of their token budget.
    *_tokens: means per generation; tokens_per_correct: all output tokens over the right answers
    (binary primary metrics only; None when none was right).
    """

    model: str
    task: str
    n: int
    thinks: int
    unfinished: int
    truncated: int
    output_tokens: float | None
    thinking_tokens: float | None
    answer_tokens: float | None
    tokens_per_correct: float | None
    correct: float | None


@dataclass
class SummaryRow:
    """Mean of the tasks' primary metrics per family, and of the families overall."""

    model: str
    scope: str  # "family" | "overall"
    name: str
    value: float


@dataclass
class Comparison:
    """Distilled vs teacher (and baseline) for one task/metric, family or overall.
    None means not computable; `notes` says why (footnote keys of the report)."""

    scope: str  # "task" | "family" | "overall"
    name: str
    metric: str
    retention: float | None
    gap_closed: float | None
    agreement: float | None
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    kdeval_version: str
    created_at: str
    command: list[str]
    settings: dict[str, Any]
    models: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    scores: list[ScoreRow]
    agreement: list[AgreementRow]
    summary: list[SummaryRow] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    samples: dict[str, str] = field(default_factory=dict)
    #: source revision the run was made from ($GITHUB_SHA or `git rev-parse HEAD` where run), if known
    commit: str | None = None
    #: cost figures per model name, measured in their own phase (see kdeval.gate for the shape)
    efficiency: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the cost of the answers per model and task: thinking, budget hits, tokens per right answer
    generation: list[GenerationRow] = field(default_factory=list)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def role(self, role: str) -> str | None:
        return next((m["name"] for m in self.models if m["role"] == role), None)

    def gen(self, model: str, task: str) -> GenerationRow | None:
        return next((g for g in self.generation if (g.model, g.task) == (model, task)), None)

    def value(self, model: str, task: str, metric: str) -> float | None:
        return next(
            (s.value for s in self.scores if (s.model, s.task, s.metric) == (model, task, metric)), None
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False, default=_nan_free)

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json() + "\n")

    @classmethod
    def read(cls, path: Path) -> RunResult:
        raw = read_json(path)
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise UserError(
                "not a kdeval results file",
                where=str(path),
                fix="pass DIR/results.json from `kdeval compare`",
            )
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise UserError(
                f"results schema version {raw.get('schema_version')} is not supported "
                f"(this kdeval reads {SCHEMA_VERSION})",
                where=str(path),
                fix="re-run `kdeval compare` with this version",
            )
        return cls(
            **{
                **raw,
                "scores": [ScoreRow(**r) for r in raw["scores"]],
                "agreement": [AgreementRow(**r) for r in raw["agreement"]],
                "summary": [SummaryRow(**r) for r in raw["summary"]],
                "comparisons": [Comparison(**r) for r in raw["comparisons"]],
                "generation": [GenerationRow(**r) for r in raw.get("generation", [])],
            }
        )


def _nan_free(obj: object) -> object:
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def clean(x: float | None) -> float | None:
    """JSON has no NaN: a value that could not be computed is stored as null."""
    return None if x is None or math.isnan(x) else x


def derive(result: RunResult) -> None:
    """Fill `summary` and `comparisons` from `scores` and `agreement`."""
    result.summary = _summaries(result)
    result.comparisons = _comparisons(result)


def _summaries(r: RunResult) -> list[SummaryRow]:
    rows = []
    families: dict[str, list[dict[str, Any]]] = {}
    for t in r.tasks:
        families.setdefault(t["family"], []).append(t)
    for m in r.models:
        fam_values = []
        for fam, tasks in families.items():
            vals = [r.value(m["name"], t["name"], t["primary_metric"]) for t in tasks]
            known = [v for v in vals if v is not None]
            if known:
                v = sum(known) / len(known)
                fam_values.append(v)
                rows.append(SummaryRow(m["name"], "family", fam, v))
        if fam_values:
            rows.append(SummaryRow(m["name"], "overall", "overall", sum(fam_values) / len(fam_values)))
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

    for task in r.tasks:
        for metric in task["metrics"]:

            def get(m: str, task: dict[str, Any] = task, metric: str = metric) -> float | None:
                return r.value(m, task["name"], metric)

            ret, gap, notes = ratios(val(t, get), val(b, get), val(d, get), has_teacher=t is not None)
            out.append(Comparison("task", task["name"], metric, ret, gap, agree([task["name"]]), notes))
    for scope in ("family", "overall"):
        names = sorted({s.name for s in r.summary if s.scope == scope}, key=_family_order(r))
        for name in names:

            def sget(m: str, scope: str = scope, name: str = name) -> float | None:
                return next(
                    (s.value for s in r.summary if (s.model, s.scope, s.name) == (m, scope, name)), None
                )

            tasks = [x["name"] for x in r.tasks if scope == "overall" or x["family"] == name]
            ret, gap, notes = ratios(val(t, sget), val(b, sget), val(d, sget), has_teacher=t is not None)
            out.append(Comparison(scope, name, "primary", ret, gap, agree(tasks), notes))
    return out


def _family_order(r: RunResult) -> Any:
    order = list(dict.fromkeys(t["family"] for t in r.tasks))
    return lambda name: order.index(name) if name in order else len(order)
