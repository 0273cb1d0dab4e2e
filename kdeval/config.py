"""Typed run specifications, built by the CLI (or a YAML file) and validated before any model runs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdeval.backends.base import GenerationSettings
from kdeval.errors import UserError

Role = Literal["teacher", "baseline", "distilled", "other"]
ROLES: tuple[Role, ...] = ("teacher", "baseline", "distilled")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str
    role: Role = "other"

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if not _MODEL_NAME.match(v):
            raise ValueError("model names may use letters, digits, '.', '_' and '-' only")
        return v


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec]
    suites: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    data: dict[str, str] = Field(default_factory=dict)
    backend: Literal["vllm", "hf"] = "hf"
    limit: int | None = None
    out: Path = Path("runs/latest")
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    max_model_len: int = 2048
    batch_size: int = 16
    use_chat_template: bool | None = None
    trust_remote_code: bool = False

    def generation(self) -> GenerationSettings:
        return GenerationSettings(
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            batch_size=self.batch_size,
        )

    def settings_hash(self) -> str:
        """What changes model outputs besides the model and the prompt (batch size does not, by design)."""
        gen = asdict(self.generation())
        gen.pop("batch_size")
        payload = {"backend": self.backend, "chat": self.use_chat_template, **gen}
        return digest(payload)


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


def check_model_path(spec: ModelSpec) -> None:
    """A local model directory must exist and hold a config.json; anything else that looks like
    'org/name' is taken as a Hugging Face hub id."""
    p = Path(spec.path).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise UserError(
                f"model '{spec.name}' at {p} is not a Hugging Face model directory (no config.json)",
                fix="pass a directory saved with save_pretrained()",
            )
        return
    if spec.path.startswith((".", "/", "~")) or not _HUB_ID.match(spec.path):
        raise UserError(
            f"model directory for '{spec.name}' does not exist: {spec.path}",
            fix="check the path (or pass a hub id such as org/name)",
        )


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
