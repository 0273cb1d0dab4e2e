"""One schema for a comparison, wherever it is written: `kdeval compare --config run.yaml`,
gate.yaml's `compare:` section, pipeline.yaml's `compare:` section, and the command line's flags.

    models:                                   # name: path, or name: {path, backend, options, ...}
      teacher:                                # teacher / baseline / distilled are roles;
        backend: openai                       # any other name is an extra model
        options:
          base_url: http://gpu-node-0:8000/v1
          model: deepseek-ai/DeepSeek-V3
          api_key_env: TEACHER_API_KEY        # the variable's name; the key is never written
          concurrency: 64
      baseline: ckpt/student-sft              # a plain path: the run's backend, no options
      distilled:
        path: ckpt/student-kd
        backend: vllm
        options: {tensor_parallel_size: 2, gpu_memory_utilization: 0.85}
    suites: [qa, math]                        # and/or tasks: [...], data: {task: file}
    limit: 200
    out: runs/kd-v3

The other keys are `kdeval compare`'s settings under their flag names (seed, temperature, top_p,
dtype, max_model_len, batch_size, use_chat_template, trust_remote_code, backend, efficiency,
fidelity, fidelity_topk).
Each backend's options are checked by that backend (kdeval.backends.registry), with file:line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kdeval.config import MAX_SAMPLES, ROLES, LmEvalSpec, ModelSpec, RunSpec, check_dtype, check_sampling
from kdeval.errors import UserError
from kdeval.yamlfile import Lines, line_of, read_yaml, validation_error


def _model_name(name: str) -> str:
    ModelSpec(name=name, path=".")  # the CLI's rule for names, so every place accepts the same ones
    return name


def _plain_path(v: Any) -> Any:
    return {"path": v} if isinstance(v, str) else v


def _budgets(v: Any) -> Any:
    """`max_tokens: 4096` is every task's budget; `max_tokens: {gsm8k: 512}` one task's."""
    return {"*": v} if isinstance(v, int) and not isinstance(v, bool) else v


class ModelEntry(BaseModel):
    """A model: a checkpoint directory, hub id or server URL, and how to run it."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    backend: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    max_model_len: int | None = Field(default=None, ge=1)
    thinking: str = Field(default="auto", description="auto | off | START,END (trace delimiters)")


Entry = Annotated[ModelEntry, BeforeValidator(_plain_path)]


class CompareSettings(BaseModel):
    """Everything of a comparison but its models (pipeline.yaml names those itself)."""

    model_config = ConfigDict(extra="forbid")

    suites: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    data: dict[str, str] = Field(default_factory=dict)
    backend: str | None = Field(
        default=None, description="for models that name none (default: vllm when it imports)"
    )
    limit: int | None = Field(default=None, ge=1, strict=True)  # `limit: true` is not 1
    out: Path | None = None
    efficiency: bool = Field(default=True, description="measure latency, throughput and memory too")
    fidelity: bool = Field(
        default=True, description="token-level fidelity of the students to the teacher (when there is one)"
    )
    fidelity_topk: int | None = Field(
        default=None, ge=1, strict=True, description="cut the teacher's distribution to its top k (+ tail)"
    )
    seed: int = 0
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    dtype: str = "auto"
    max_model_len: int = Field(default=2048, ge=1)
    batch_size: int = Field(default=16, ge=1)
    use_chat_template: bool | None = None
    trust_remote_code: bool = False
    max_tokens: Annotated[dict[str, int], BeforeValidator(_budgets)] = Field(
        default_factory=dict, description="N for every task, or {task: N}"
    )
    samples: int = Field(
        default=1, ge=1, le=MAX_SAMPLES, description="samples per example (mean@N, pass@k, maj@N)"
    )
    lm_eval: LmEvalSpec = Field(default_factory=LmEvalSpec, description="lm-evaluation-harness tasks")
    evaluate: dict[str, list[str]] = Field(
        default_factory=dict, description="{task: [evaluate module path or hub id]}: extra corpus metrics"
    )

    _dtype = field_validator("dtype")(check_dtype)

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> CompareSettings:
        check_sampling(self.samples, self.temperature)
        return self

    def spec_for(
        self,
        models: dict[str, ModelEntry],
        *,
        default_out: Path,
        lines: Lines | None = None,
        file: Path | str | None = None,
        prefix: tuple[str | int, ...] = (),
    ) -> RunSpec:
        """The RunSpec: one ModelSpec per entry, remembering file:line of each of its keys."""
        from kdeval.backends import default_backend

        specs = [
            _model_spec(name, e, lines or {}, file, (*prefix, "models", name)) for name, e in models.items()
        ]
        own = set(CompareSettings.model_fields) - {
            "backend",
            "efficiency",
            "fidelity",
            "fidelity_topk",
            "out",
        }
        settings = self.model_dump(include=own)
        try:
            return RunSpec(
                models=specs,
                backend=self.backend or default_backend(),
                out=self.out or default_out,
                **settings,
            )
        except ValidationError as exc:
            if file is None:
                err = exc.errors()[0]
                key = ".".join(str(x) for x in err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                raise UserError(f"{key}: {msg}", fix="fix that value") from None
            raise validation_error(exc, Path(file), lines or {}, prefix, fix="fix that value") from None


class RunConfig(CompareSettings):
    """A whole comparison: the models and the settings (run.yaml, gate.yaml's compare:)."""

    models: dict[Annotated[str, AfterValidator(_model_name)], Entry] = Field(min_length=1)

    @classmethod
    def keys(cls) -> list[str]:
        """The keys a run file takes, models first (for error messages)."""
        return ["models", *CompareSettings.model_fields]

    def run_spec(
        self,
        *,
        default_out: Path = Path("runs/latest"),
        lines: Lines | None = None,
        file: Path | str | None = None,
        prefix: tuple[str | int, ...] = (),
    ) -> RunSpec:
        return self.spec_for(self.models, default_out=default_out, lines=lines, file=file, prefix=prefix)


def _model_spec(
    name: str, e: ModelEntry, lines: Lines, file: Path | str | None, loc: tuple[str | int, ...]
) -> ModelSpec:
    where: dict[str, str] = {}
    if file is not None:
        where[""] = f"{file}:{line_of(lines, loc)}"
        for key in ("path", "backend", "options", "dtype", "max_model_len", "thinking"):
            if (*loc, key) in lines:
                where[key] = f"{file}:{lines[(*loc, key)]}"
        for key in e.options:
            where[f"options.{key}"] = f"{file}:{line_of(lines, (*loc, 'options', key))}"
    try:
        return ModelSpec(
            name=name,
            role=name if name in ROLES else "other",
            lines=where,
            **e.model_dump(),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        key = ".".join(str(x) for x in err["loc"])
        at = where.get(key) or where.get("")
        raise UserError(f"model '{name}'{': ' + key if key else ''}: {msg}", where=at) from None


def load_run_config(file: Path) -> tuple[RunConfig, Lines]:
    """`kdeval compare --config FILE`: the file checked against the schema, with its key lines."""
    data, lines = read_yaml(file, missing="run file not found", fix="pass an existing YAML file to --config")
    if not isinstance(data, dict):
        raise UserError("expected a mapping (models:, suites:, ...)", where=f"{file}:1")
    return validate_run_config(data, file, lines), lines


def validate_run_config(data: dict[str, Any], file: Path, lines: Lines) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        keys = ", ".join(RunConfig.keys())
        raise validation_error(exc, file, lines, fix=f"keys: {keys} (see kdeval/runconfig.py)") from None
