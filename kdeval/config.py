"""Typed run specifications, built by the CLI (or a YAML file) and validated before any model runs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdeval.backends.base import GenerationSettings
from kdeval.errors import UserError

#: More samples per example than any published protocol uses (AIME's pass@k goes to 64-1024).
MAX_SAMPLES = 1024
Role = Literal["teacher", "baseline", "distilled", "other"]
ROLES: tuple[Role, ...] = ("teacher", "baseline", "distilled")
#: dtype names every backend understands; "auto" is the checkpoint's own (see resolve_dtype).
DTYPES = ("auto", "float32", "float16", "bfloat16", "half", "float")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
_URL = re.compile(r"^https?://", re.IGNORECASE)


def is_url(path: str | None) -> bool:
    """A model given as http(s)://... is an OpenAI-compatible server."""
    return bool(path) and bool(_URL.match(str(path)))


def check_dtype(v: str | None) -> str | None:
    if v is not None and v not in DTYPES:
        raise ValueError(f"unknown dtype '{v}' (known: {', '.join(DTYPES)})")
    return v


class ModelSpec(BaseModel):
    """One model of a run: where it is, which backend serves it, and that backend's options.

    `path` is a checkpoint directory, a hub id, or the URL of an OpenAI-compatible server (which
    selects the `openai` backend). `options` are validated by the backend (kdeval.backends.registry);
    `dtype` / `max_model_len` override the run's for this model. `lines` maps keys such as
    "options.tensor_parallel_size" to "file:line" for error messages; it is no part of the model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str | None = None
    role: Role = "other"
    backend: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    max_model_len: int | None = Field(default=None, ge=1)
    #: thinking-trace delimiters: "auto" (from the chat template / tokenizer), "off", or "START,END"
    thinking: str = "auto"
    lines: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not _MODEL_NAME.match(v):
            raise ValueError("model names may use letters, digits, '.', '_' and '-' only")
        return v

    _dtype = field_validator("dtype")(check_dtype)

    @field_validator("thinking")
    @classmethod
    def _thinking_is_known(cls, v: str) -> str:
        from kdeval.thinking import check_setting

        return check_setting(v)

    @model_validator(mode="after")
    def _url_means_server(self) -> ModelSpec:
        if is_url(self.path):
            if self.backend not in (None, "openai"):
                raise ValueError(f"a server URL is served by the openai backend, not '{self.backend}'")
            object.__setattr__(self, "backend", "openai")
            if "base_url" not in self.options:
                object.__setattr__(self, "options", {**self.options, "base_url": self.path})
        return self

    def where_of(self, key: str) -> str | None:
        """file:line of a key of this model's entry (or of the entry), when it came from a file."""
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return self.lines.get("")


class LmEvalSpec(BaseModel):
    """lm-evaluation-harness tasks of a run (kdeval.lmeval), with lm-eval's own option names."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=list, description="lm-eval tasks, groups or tags")
    include: list[str] = Field(default_factory=list, description="folders of your own task YAMLs")
    num_fewshot: int | None = Field(default=None, ge=0)
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = True
    system_instruction: str | None = None


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec]
    suites: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    data: dict[str, str] = Field(default_factory=dict)
    #: the backend of every model that names none (the CLI picks vllm when it imports, else hf)
    backend: str = "hf"
    limit: int | None = Field(default=None, ge=1)
    out: Path = Path("runs/latest")
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0
    dtype: str = "auto"
    max_model_len: int = Field(default=2048, ge=1)
    batch_size: int = Field(default=16, ge=1)
    use_chat_template: bool | None = None
    trust_remote_code: bool = False
    #: generation budgets overriding the tasks' own: task name -> tokens ("*" = every task)
    max_tokens: dict[str, int] = Field(default_factory=dict)
    #: samples per example of generation tasks (mean@N, pass@k, maj@N); needs temperature > 0
    samples: int = Field(default=1, ge=1, le=MAX_SAMPLES)
    lm_eval: LmEvalSpec = Field(default_factory=LmEvalSpec)
    #: extra corpus metrics from the `evaluate` library: task name -> module paths or hub ids
    evaluate: dict[str, list[str]] = Field(default_factory=dict)

    _dtype = field_validator("dtype")(check_dtype)

    @field_validator("max_tokens")
    @classmethod
    def _budgets_positive(cls, v: dict[str, int]) -> dict[str, int]:
        for task, n in v.items():
            if n < 1:
                raise ValueError(f"max_tokens for '{task}' must be at least 1, got {n}")
        return v

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> RunSpec:
        check_sampling(self.samples, self.temperature)
        return self

    def budget(self, task: str, default: int) -> int:
        """A generation task's token budget: its own override, else the run's, else the task's."""
        return self.max_tokens.get(task, self.max_tokens.get("*", default))

    def generation(self) -> GenerationSettings:
        """The run's settings before any model adjusts them (dtype resolved per model later)."""
        return GenerationSettings(
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            batch_size=self.batch_size,
        )

    def backend_of(self, model: ModelSpec) -> str:
        return model.backend or self.backend

    def settings_hash(self) -> str:
        """The run-level settings that change outputs (each model's own are in its entry)."""
        gen = asdict(self.generation())
        gen.pop("batch_size")
        payload: dict[str, object] = {"backend": self.backend, "chat": self.use_chat_template, **gen}
        if self.max_tokens:  # keyed only when set, so earlier runs keep their hash
            payload["max_tokens"] = self.max_tokens
        if self.samples > 1:
            payload["samples"] = self.samples
        return digest(payload)


def check_sampling(samples: int, temperature: float) -> None:
    """N samples of a greedy model would be N copies of one answer: refuse rather than run them."""
    if samples > 1 and temperature == 0:
        raise ValueError(
            f"samples={samples} with temperature 0 would give {samples} identical greedy answers; "
            "set a temperature (the R1 protocol: --temperature 0.6 --top-p 0.95)"
        )


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    """'NAME=VALUE' from a repeated CLI flag."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise UserError(
            f"{flag} expects NAME=VALUE, got '{text}'", fix=f"e.g. {flag} student2=/path/to/model"
        )
    return name.strip(), value.strip()


def parse_value(text: str) -> Any:
    """A flag's value as YAML reads a scalar: 2 -> int, 0.9 -> float, true -> bool, else the text.

    >>> parse_value("2"), parse_value("0.85"), parse_value("true"), parse_value("fp8")
    (2, 0.85, True, 'fp8')
    """
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool | str) or value is None else text


def parse_options(items: list[str], flag: str) -> dict[str, Any]:
    """Repeated KEY=VALUE flags as a dict of typed values."""
    return {key: parse_value(value) for key, value in (parse_assignment(x, flag) for x in items)}


# What the trainer writes beside a model: logs and plots with timings, not part of the model.
_NOT_MODEL = {"train_log.jsonl", "loss_curve.png", "distill_config.yaml", "distill_summary.json"}


def model_fingerprint(path: str) -> str:
    """Identity of a checkpoint: names, sizes and head/tail bytes of the files of the model
    directory (fast even for large weights, and changes whenever the checkpoint is rewritten).
    Sub-folders (training checkpoints, caches) and training logs are not part of the model, so
    the same weights trained twice keep one fingerprint (and their stored outputs)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return digest({"hub": path})
    h = hashlib.sha256()
    files = (
        x for x in p.iterdir() if x.is_file() and not x.name.startswith(".") and x.name not in _NOT_MODEL
    )
    for f in sorted(files):
        size = f.stat().st_size
        h.update(f"{f.relative_to(p)}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()[:16]
