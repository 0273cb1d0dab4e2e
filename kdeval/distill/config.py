"""The distillation job as one typed, YAML-round-trippable spec (unknown keys are rejected).

The CLI builds it from flags, a pipeline file from its `distill:` section; the trainer writes the
exact spec it ran with next to the model (`distill_config.yaml`), and a resumed run must match it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdeval.distill import methods
from kdeval.errors import UserError

CONFIG_FILE = "distill_config.yaml"


class DistillConfig(BaseModel):
    """Hyperparameters and paths of one training run.

    Loss (per valid response token, averaged over all of them in an optimizer step):
      sft, seqkd:          CE on the response (seqkd's responses come from the teacher).
      kd, jsd, tvd, skl:   alpha * CE(response) + (1 - alpha) * temperature**2 * D(p_T, p_S),
                           with both distributions softened by `temperature`. T**2 keeps the soft
                           term's gradient scale independent of T (Hinton et al., 2015).
      gkd:                 the same with jsd's divergence, where a share `lmbda` of the micro-batches
                           has responses the student samples (kdeval.distill.onpolicy); alpha
                           defaults to 0 (TRL's GKD loss is the generalized JSD alone).
    """

    model_config = ConfigDict(extra="forbid")

    student: str = Field(description="student model directory (or hub id): the starting weights")
    teacher: str | None = Field(
        None, description="teacher model directory, hub id, or OpenAI-compatible server URL"
    )
    train: str = Field(
        description="JSONL of prompts and, where present, responses; or a suite or task name "
        "(nli_synth, nli,qa, math_synth:500): that task's training split, with its own prompts"
    )
    valid: str | None = Field(None, description="JSONL with responses; its response CE is logged per epoch")
    out: str = Field(
        description="output folder: the trained model (Hugging Face layout) + log, curve, config"
    )

    method: str = Field("kd", description="the loss method (kdeval.distill.methods)")
    temperature: float = Field(1.0, gt=0, description="softens both distributions (token methods)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of CE on the response tokens")
    beta: float = Field(0.5, ge=0, le=1, description="jsd: 0 = forward KL, 1 = reverse KL")
    skew: float = Field(0.1, gt=0, lt=1, description="skl: KL(p_T || skew*p_T + (1-skew)*p_S)")

    lr: float = Field(2e-5, gt=0, description="AdamW peak learning rate (linear warm-up, linear decay)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    batch_size: int = Field(2, ge=1, description="examples per micro-batch")
    grad_accum: int = Field(8, ge=1, description="micro-batches per optimizer step")
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    seed: int = 0
    max_len: int = Field(1024, ge=4, description="prompt + response tokens; prompts are cut first")

    checkpoint_every: int = Field(100, ge=0, description="a checkpoint every N optimizer steps; 0 = none")
    checkpoint_minutes: float = Field(
        5.0,
        ge=0,
        description="also a checkpoint once this many minutes passed since the last one, so a killed run "
        "loses at most that much work to --resume; 0 = none by time",
    )
    keep_checkpoints: bool = False
    # gkd (on-policy distillation, kdeval.distill.onpolicy)
    lmbda: float = Field(0.5, ge=0, le=1, description="gkd: share of micro-batches the student writes")
    student_temperature: float = Field(
        0.9, ge=0, description="gkd: the student's sampling temperature (0 = greedy; TRL's default 0.9)"
    )
    student_max_tokens: int = Field(128, ge=1, description="gkd: longest student-written response")

    topk: int | None = Field(None, ge=1, description="train from a top-k teacher cache (None = dense)")
    topk_cache: str | None = Field(None, description="cache folder (default: OUT/teacher_topk)")
    topk_shard: int = Field(
        1024,
        ge=1,
        description="examples per top-k cache shard (a killed build keeps whole shards and resumes)",
    )
    chunk_size: int = Field(512, ge=1, description="tokens per loss chunk (bounds the logits memory)")

    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="student compute precision: bf16/fp16 autocast over float32 master weights (fp16 with "
        "loss scaling, GPU only); the losses stay float32; a dense teacher runs in bf16/fp16 too, or in its "
        "checkpoint's dtype with fp32",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute the student's layer activations in the backward (less memory)"
    )
    lora_r: int | None = Field(
        None, ge=1, description="train a LoRA adapter of this rank (peft) instead of all weights"
    )
    lora_alpha: int | None = Field(None, ge=1, description="LoRA scaling numerator (default 2 * lora_r)")
    lora_target: list[str] | None = Field(
        None, description="module names LoRA adapts, comma-separated (default: peft's for the model type)"
    )
    save_adapter: bool = Field(
        False, description="with LoRA: keep the adapter in OUT/adapter as well as the merged model in OUT"
    )

    use_chat_template: bool | None = None
    trust_remote_code: bool = False
    # seqkd stage 1: the teacher's generations, cached so stage 2 (and re-runs) reuse them.
    teacher_responses: str | None = Field(
        None, description="JSONL cache (default: OUT/teacher_responses.jsonl)"
    )
    teacher_backend: str | None = Field(
        None,
        description="backend that serves the teacher for seqkd answers and a --topk cache (vllm, hf, "
        "openai; default: openai for a URL, else vllm when it imports for seqkd and transformers for logits)",
    )
    teacher_options: dict[str, Any] = Field(
        default_factory=dict, description="the teacher backend's options (as in a run file's model entry)"
    )
    teacher_max_tokens: int = Field(256, ge=1, description="seqkd: longest teacher answer, in tokens")
    teacher_thinking: str = Field(
        "auto",
        description="seqkd: the teacher's thinking-trace delimiters, kept in the answers the student "
        "learns (auto: from its chat template; off; or START,END)",
    )

    @field_validator("method")
    @classmethod
    def _method_is_known(cls, v: str) -> str:
        if v not in methods.names():
            raise ValueError(f"unknown method '{v}'; methods: {', '.join(methods.names())}")
        return v

    @field_validator("teacher_thinking")
    @classmethod
    def _thinking_is_known(cls, v: str) -> str:
        from kdeval.thinking import check_setting

        return check_setting(v)

    @field_validator("lora_target", mode="before")
    @classmethod
    def _split_targets(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [t.strip() for t in v.split(",")]
        if isinstance(v, list) and not all(isinstance(t, str) and t for t in v):
            raise ValueError("lora_target needs module names, e.g. q_proj,v_proj")
        return v

    @model_validator(mode="after")
    def _lora_settings_need_a_rank(self) -> DistillConfig:
        given = [f for f in ("lora_alpha", "lora_target") if getattr(self, f) is not None]
        given += ["save_adapter"] if self.save_adapter else []
        if given and self.lora_r is None:
            raise ValueError(f"{', '.join(given)} without lora_r: pass --lora-r R to train a LoRA adapter")
        return self

    @model_validator(mode="after")
    def _teacher_when_needed(self) -> DistillConfig:
        method = methods.get(self.method)
        if method.needs_teacher and not self.teacher:
            raise ValueError(f"method '{self.method}' needs a teacher (--teacher PATH)")
        if self.topk is not None and self.method not in methods.topk_methods():
            raise ValueError(f"topk applies to {', '.join(methods.topk_methods())} only, not '{self.method}'")
        if method.on_policy:
            self._check_on_policy()
        if method.token_level and self.topk is None and self.teacher_served():
            raise ValueError(
                f"method '{self.method}' with a served teacher needs --topk K: a server returns the "
                "top-k log-probs of each token, never the whole distribution"
            )
        if self.topk is not None and self.teacher_served() and self.temperature != 1.0:
            raise ValueError(
                "a top-k cache from a served teacher needs temperature 1: servers return log-probs at "
                "temperature 1, and softening them needs the whole distribution"
            )
        return self

    def _check_on_policy(self) -> None:
        if self.teacher_served():
            raise ValueError(
                f"method '{self.method}' scores the student's own samples during training, so it needs "
                "the teacher loaded here (a model directory, no --teacher-backend)"
            )
        if "alpha" not in self.model_fields_set:
            self.alpha = 0.0  # TRL's GKD loss: the generalized JSD alone

    def teacher_served(self) -> bool:
        """Whether the teacher is reached through a kdeval backend rather than loaded for training:
        a server URL, or a backend named explicitly."""
        from kdeval.config import is_url

        return is_url(self.teacher) or self.teacher_backend not in (None, "hf")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def topk_dir(self) -> Path:
        return Path(self.topk_cache) if self.topk_cache else self.out_dir / "teacher_topk"

    def responses_path(self) -> Path:
        return (
            Path(self.teacher_responses)
            if self.teacher_responses
            else self.out_dir / "teacher_responses.jsonl"
        )

    def to_yaml(self) -> str:
        import yaml

        return str(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))


def make_config(values: dict[str, Any], where: str = "distill config") -> DistillConfig:
    """Validate `values`; the first problem becomes one UserError line naming the field."""
    try:
        return DistillConfig.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        flag = f"--{field.replace('_', '-')}"
        if err["type"] == "missing":
            raise UserError(
                f"missing '{field}'", where=where, fix=f"pass {flag} or set {field}: in the YAML"
            ) from None
        if err["type"] == "extra_forbidden":
            raise UserError(
                f"unknown setting '{field}'",
                where=where,
                fix="check the spelling (kdeval distill --help lists them)",
            ) from None
        what = f"{field}: " if field else ""
        raise UserError(
            f"{what}{err['msg'].removeprefix('Value error, ')}", where=where, fix="fix that setting"
        ) from None


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """A YAML file (optional) with CLI overrides on top; overrides set to None are ignored."""
    from kdeval.yamlfile import read_yaml

    values: dict[str, Any] = {}
    if path is not None:
        loaded, _ = read_yaml(path, missing="config file not found", fix="check the --config path")
        if not isinstance(loaded, dict):
            raise UserError("expected a mapping of settings", where=str(path), fix="write key: value lines")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(values, where=str(path) if path else "distill options")
