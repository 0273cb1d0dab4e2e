"""The results.json schema: versioned, typed and checked.

Everything the report shows comes from a `RunResult`; `kdeval.derive` fills its summary rows and
teacher comparisons from the per-task scores alone. Files are read through `kdeval.runs`, which
turns a missing or mistyped field into one line naming the file and the field.

Writing gives the bytes kdeval has always written: the rows' keys in their declared order, and
the entries that hold optional or open keys (settings, models, tasks, efficiency) with exactly
the keys they were given, in the order given. So a file reads and writes back unchanged, and
files written before `generation`, `max_tokens`, `samples` or `thinking` existed stay readable.

>>> row = ScoreRow(model="m", task="t", metric="f1", value=50.0, ci_low=None, ci_high=None, n=2)
>>> ScoreRow.model_validate(row.model_dump(), strict=True) == row
True
>>> Machine.model_validate({"cpu": "x86_64", "cores": 2}).model_dump()  # open: order and keys kept
{'cpu': 'x86_64', 'cores': 2}
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainValidator,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from kdeval.config import Role
from kdeval.datafiles import write_atomic

SCHEMA: Final = "kdeval.results"
SCHEMA_VERSION: Final = 1


def _number(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {json.dumps(value, default=str)[:40]}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


#: a measured figure: an int stays an int and a float a float, so a file writes back unchanged
Number = Annotated[int | float, PlainValidator(_number)]
#: one group of figures, e.g. latency {mean, p50, p90, p99} or memory {weights, kv_cache, peak}
Group = dict[str, Number | None]
#: efficiency figure group (as rules and sort keys name it) -> (key in `Figures`, its stats, unit,
#: higher is better)
EFFICIENCY: dict[str, tuple[str, tuple[str, ...], str, bool]] = {
    "latency": ("latency_ms", ("mean", "p50", "p90", "p99"), "ms", False),
    "memory": ("memory_mib", ("weights", "kv_cache", "peak"), "MiB", False),
    "throughput": ("throughput", ("requests_per_s", "tokens_per_s"), "/s", True),
}


class _Row(BaseModel):
    """A results.json object with a fixed shape: every key written, in declared order. Unknown
    keys and NaN are refused; files are validated strictly (`kdeval.runs`), Python callers laxly
    (a tuple passes for a list)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Entry(_Row):
    """A results.json object with optional (or, with extra="allow", open) keys: written with the
    keys it was given, in the order given; a key it was not given stays absent."""

    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        entry = handler(data)
        if isinstance(data, dict):
            entry._order = tuple(data)
        return entry

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        given = self.model_fields_set | set(self.model_extra or {})
        order = [k for k in self._order if k in given] + [k for k in out if k not in self._order]
        return {k: out[k] for k in order if k in out and k in given}


# --- the run: settings, models, tasks ------------------------------------------------------


class RunSettings(_Entry):
    """The run's generation and scoring settings (`kdeval compare`'s flags)."""

    backend: str
    temperature: float
    top_p: float
    seed: int
    dtype: str
    max_model_len: int
    batch_size: int
    use_chat_template: bool | None
    limit: int | None
    #: token budgets by task ("*": every task); written only when set
    max_tokens: dict[str, int] = Field(default_factory=dict)
    #: answers per example; written only when above 1
    samples: int = 1
    bootstrap_resamples: int
    settings_hash: str

    def values(self) -> dict[str, Any]:
        """Every setting, a missing optional one at its default (what the run actually used)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


class ModelRow(_Entry):
    """One model of the run. Open: a backend's own facts (e.g. a server's `host`) ride along."""

    model_config = ConfigDict(extra="allow")

    name: str
    role: Role
    path: str
    fingerprint: str
    reused: int
    computed: int
    backend: str
    chat_template: bool | None = None
    n_params: int | None = None
    dtype: str
    remote: bool
    max_model_len: int
    options: dict[str, Any]
    #: the options that change outputs (what the gate compares)
    output_options: dict[str, Any]
    settings_hash: str
    #: the thinking-trace delimiters [start, end], when the model thinks
    thinking: Annotated[list[str], Field(min_length=2, max_length=2)] | None = None
    #: what a remote model's server reported (model id, root, max_model_len)
    server: dict[str, Any] | None = None


class TaskRow(_Entry):
    """One task of the run, with the hashes that decide whether two runs can be compared."""

    name: str
    suite: str
    family: str
    version: str
    task_type: Literal["multiple_choice", "generate"]
    metrics: list[str]
    primary_metric: str
    #: this run's token budget for the task; written only when the run set budgets
    max_tokens: int | None = None
    #: answers per example; written only when above 1
    samples: int = 1
    n_examples: int
    #: examples every model was scored on (what retention, gap closed and agreement compare) and
    #: why the others were dropped for every model -> how many; written only when any was dropped
    compared: int | None = None
    dropped: dict[str, int] = Field(default_factory=dict)
    data_file: str | None
    data_hash: str
    prompt_hash: str


# --- scores and what is derived from them ----------------------------------------------------


class ScoreRow(_Row):
    model: str
    task: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


class AgreementRow(_Row):
    """Share of examples where `model` gives the same normalized answer as `reference`."""

    model: str
    reference: str
    task: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


class GenerationRow(_Row):
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


class FidelityRow(_Row):
    """Token-level fidelity of `model` to `reference` (the teacher), teacher-forced on the teacher's
    own outputs (`kdeval.fidelity`): one measure of one task, family (mean of its tasks) or overall
    (mean of the families). `source` is "dense" or "top-K" (KL, reverse KL and JSD are then lower
    bounds). A student without numbers has value None and a `note` saying why (e.g. "tokenizers
    differ"); `n` counts examples and `tokens` the teacher's tokens."""

    model: str
    reference: str
    scope: Scope
    name: str
    measure: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    tokens: int
    source: str
    note: str | None = None


class SimilarityRow(_Row):
    """Graded similarity of `model`'s free-text answers to `reference`'s (the teacher) on generation
    tasks (`kdeval.similarity`): chrF or ROUGE-L (0-100) of a task, family or overall."""

    model: str
    reference: str
    scope: Scope
    name: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


class SummaryRow(_Row):
    """Mean of the tasks' primary metrics per family, and of the families overall."""

    model: str
    scope: Pooled
    name: str
    value: float


Scope = Literal["task", "family", "overall"]
Pooled = Literal["family", "overall"]


class Comparison(_Row):
    """Distilled vs teacher (and baseline) for one task/metric, family or overall.
    None means not computable; `notes` says why (footnote keys of the report)."""

    scope: Scope
    name: str
    metric: str
    retention: float | None
    gap_closed: float | None
    agreement: float | None
    notes: list[str] = Field(default_factory=list)


# --- efficiency -------------------------------------------------------------------------------


class Repeats(_Entry):
    """How a model's figures spread over the repeated passes (min / median / max)."""

    model_config = ConfigDict(extra="allow")

    n: int | None = None  # repeats run
    used: int | None = None  # the last repeats the figures come from (older files: all n)
    stopped: Literal["stable", "budget", "max_repeats", "fixed"] | None = None
    elapsed_s: Number | None = None
    budget_s: Number | None = None
    threshold: Number | None = None
    latency_p50_ms: Group | None = None
    output_tokens_per_s: Group | None = None


class Workload(_Entry):
    model_config = ConfigDict(extra="allow")

    latency_requests: int | None = None
    throughput_requests: int | None = None
    output_len: int | None = None
    warmup: int | None = None


class Machine(_Entry):
    model_config = ConfigDict(extra="allow")

    cores: int | None = None
    load_average: list[Number] | None = None


class Figures(_Entry):
    """One model's cost figures, measured in their own phase (see `kdeval.efficiency` for every
    key). The keys the report, gate and leaderboard read are typed; the rest ride along as they
    are (engine settings, processes, ...). A model that could not be measured has `error` only."""

    model_config = ConfigDict(extra="allow")

    error: str | None = None
    #: "cpu: AMD EPYC (2 cores)", a GPU's name, or "remote: ..."; latency rules compare devices
    device: str | None = None
    backend: str | None = None
    dtype: str | None = None
    remote: bool = False
    startup_s: Number | None = None
    n_params: int | None = None
    latency_ms: Group | None = None
    ttft_ms: Group | None = None
    tpot_ms: Group | None = None
    throughput: Group | None = None
    memory_mib: Group | None = None
    answer_latency_ms: Group | None = None
    answer_tokens: Group | None = None
    repeats: Repeats | None = None
    noisy: bool = False
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    workload: Workload | None = None
    machine: Machine | None = None
    versions: dict[str, str | None] | None = None

    def number(self, group: str, key: str) -> float | None:
        """One figure, e.g. number("latency_ms", "p50"); None when not measured."""
        values = getattr(self, group) if group in type(self).model_fields else None
        x = values.get(key) if isinstance(values, dict) else None
        return None if x is None else float(x)

    def figure(self, path: str) -> float | None:
        """A rule's or sort key's figure by its name, e.g. figure("latency.p50")."""
        group, _, stat = path.partition(".")
        return self.number(EFFICIENCY[group][0], stat) if group in EFFICIENCY else None


# --- the file ---------------------------------------------------------------------------------


def _timestamp(value: str) -> str:
    dt.datetime.fromisoformat(value)  # ValueError: not an ISO 8601 time
    return value


def _inside_run(samples: dict[str, str]) -> dict[str, str]:
    """Per-sample files are read relative to results.json: a path must stay inside its folder."""
    for key, rel in samples.items():
        posix, windows = PurePosixPath(rel.replace("\\", "/")), PureWindowsPath(rel)
        if not rel or posix.is_absolute() or windows.drive or windows.root or ".." in posix.parts:
            raise ValueError(f"{key}: '{rel}' is not a path inside the run folder")
    return samples


class RunResult(_Row):
    """A whole results.json. Assignments are checked too (`derive`, the cost phase)."""

    model_config = ConfigDict(validate_assignment=True, populate_by_name=True)

    kdeval_version: str
    created_at: Annotated[str, AfterValidator(_timestamp)]
    command: list[str]
    settings: RunSettings
    models: list[ModelRow]
    tasks: list[TaskRow]
    scores: list[ScoreRow]
    agreement: list[AgreementRow]
    summary: list[SummaryRow] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)
    #: "MODEL/TASK" -> its per-example samples file, relative to the folder of results.json
    samples: Annotated[dict[str, str], AfterValidator(_inside_run)] = Field(default_factory=dict)
    #: source revision the run was made from ($GITHUB_SHA or `git rev-parse HEAD` where run), if known
    commit: str | None = None
    #: cost figures per model name, measured in their own phase
    efficiency: dict[str, Figures] = Field(default_factory=dict)
    #: the cost of the answers per model and task: thinking, budget hits, tokens per right answer
    generation: list[GenerationRow] = Field(default_factory=list)
    #: token-level fidelity of each student to the teacher (per task, family and overall)
    fidelity: list[FidelityRow] = Field(default_factory=list)
    #: chrF / ROUGE-L of each student's answers against the teacher's (generation tasks)
    similarity: list[SimilarityRow] = Field(default_factory=list)
    schema_: Literal["kdeval.results"] = Field(default=SCHEMA, alias="schema")
    schema_version: Literal[1] = SCHEMA_VERSION

    @model_validator(mode="after")
    def _names_known(self) -> Self:
        """Rows name models and tasks of this run (a row for an unknown one is a broken file)."""
        models, tasks = {m.name for m in self.models}, {t.name for t in self.tasks}
        if len(models) != len(self.models):
            raise ValueError("models: a model name appears twice")
        for name in self.efficiency:
            if name not in models:
                raise ValueError(f"efficiency: '{name}' is not a model of this run")
        sections: list[tuple[str, list[Any], tuple[str, ...]]] = [
            ("scores", self.scores, ("model",)),
            ("agreement", self.agreement, ("model", "reference")),
            ("generation", self.generation, ("model",)),
            ("summary", self.summary, ("model",)),
        ]
        for section, rows, keys in sections:
            for i, row in enumerate(rows):
                for key in keys:
                    if getattr(row, key) not in models:
                        raise ValueError(
                            f"{section}[{i}].{key}: '{getattr(row, key)}' is not a model of this run"
                        )
                if section != "summary" and row.task not in tasks:
                    raise ValueError(f"{section}[{i}].task: '{row.task}' is not a task of this run")
        teacher_rows: list[tuple[str, list[Any]]] = [
            ("fidelity", self.fidelity),
            ("similarity", self.similarity),
        ]
        for section, items in teacher_rows:
            for i, f in enumerate(items):
                if f.model not in models or f.reference not in models:
                    raise ValueError(
                        f"{section}[{i}]: '{f.model}' or '{f.reference}' is not a model of this run"
                    )
                if f.scope == "task" and f.name not in tasks:
                    raise ValueError(f"{section}[{i}].name: '{f.name}' is not a task of this run")
        return self

    def fidelity_of(
        self, model: str, measure: str, scope: str = "overall", name: str = "overall"
    ) -> FidelityRow | None:
        """One fidelity row (overall by default), or None when the run has none for it."""
        return next(
            (
                f
                for f in self.fidelity
                if (f.model, f.measure, f.scope) == (model, measure, scope)
                and (scope == "overall" or f.name == name)
            ),
            None,
        )

    @model_serializer(mode="wrap")
    def _teacher_rows_when_any(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`fidelity` and `similarity` are written only when the run has them, so files written
        before they existed (or without a teacher) read and write back unchanged."""
        out: dict[str, Any] = handler(self)
        for key in ("fidelity", "similarity"):
            if not out.get(key):
                out.pop(key, None)
        return out

    def model(self, name: str) -> ModelRow | None:
        return next((m for m in self.models if m.name == name), None)

    def role(self, role: str) -> str | None:
        return next((m.name for m in self.models if m.role == role), None)

    def gen(self, model: str, task: str) -> GenerationRow | None:
        return next((g for g in self.generation if (g.model, g.task) == (model, task)), None)

    def value(self, model: str, task: str, metric: str) -> float | None:
        return next(
            (s.value for s in self.scores if (s.model, s.task, s.metric) == (model, task, metric)), None
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True), indent=2, allow_nan=False, default=_nan_free)

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json() + "\n")


def _nan_free(obj: object) -> object:
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def clean(x: float | None) -> float | None:
    """JSON has no NaN: a value that could not be computed is stored as null."""
    return None if x is None or math.isnan(x) else x
