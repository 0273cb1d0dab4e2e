"""Model backends: one engine per model, shared by all tasks of a run.

Which backends exist, their options and how each starts and is measured live in
`kdeval.backends.registry`. Nothing heavy is imported here: torch, transformers, vllm and the
HTTP client load only when a backend is resolved or started, so the CLI starts instantly.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from kdeval.backends.base import Backend, GenerationSettings
from kdeval.backends.registry import (
    Needs,
    ResolvedModel,
    default_backend,
    get,
    names,
    vllm_available,
)

if TYPE_CHECKING:
    from kdeval.config import ModelSpec, Role, RunSpec

__all__ = [
    "Needs",
    "ResolvedModel",
    "default_backend",
    "get",
    "load_backend",
    "names",
    "resolve",
    "vllm_available",
]

ALL_TASK_TYPES: Needs = frozenset({"generate", "multiple_choice"})


def resolve(spec: RunSpec, model: ModelSpec, needs: Needs = ALL_TASK_TYPES) -> ResolvedModel:
    """Check one model of a run with its backend, before anything runs."""
    resolved = get(spec.backend_of(model), where=model.where_of("backend")).resolve(model, spec, needs)
    return dataclasses.replace(resolved, think=_thinking(model, resolved))


def _thinking(model: ModelSpec, resolved: ResolvedModel) -> tuple[str, str] | None:
    """A model's trace delimiters: given, off, or (auto) what its local checkpoint declares.

    A server's model is read from its tokenizer directory when one is here; a server started with
    a reasoning parser returns the trace apart anyway, and other servers need the delimiters given."""
    from pathlib import Path

    from kdeval import thinking

    value = thinking.parse(model.thinking, where=model.where_of("thinking"))
    if value != "auto":
        return value
    local = resolved.facts.get("tokenizer") if resolved.remote else resolved.path
    return thinking.detect(local) if local and Path(str(local)).expanduser().is_dir() else None


def resolve_path(
    kind: str,
    path: str,
    settings: GenerationSettings,
    *,
    use_chat_template: bool | None = None,
    trust_remote_code: bool = False,
    options: dict[str, Any] | None = None,
    thinking: str = "auto",
    needs: Needs = ALL_TASK_TYPES,
    name: str = "model",
    role: Role = "other",
) -> ResolvedModel:
    """Resolve one model outside a run (the trainer's teacher, tests), with these settings."""
    from pydantic import ValidationError

    from kdeval.config import ModelSpec, RunSpec
    from kdeval.errors import UserError

    try:
        model = ModelSpec(
            name=name, role=role, path=path, backend=kind, options=options or {}, thinking=thinking
        )
    except ValidationError as exc:
        msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise UserError(f"{name}: {msg}", where=path) from None
    s = settings
    run = RunSpec(
        models=[model],
        backend=kind,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        dtype=s.dtype,
        max_model_len=s.max_model_len,
        batch_size=s.batch_size,
        use_chat_template=use_chat_template,
        trust_remote_code=trust_remote_code,
    )
    return resolve(run, model, needs)


def load_backend(kind: str, path: str, settings: GenerationSettings, **kw: Any) -> Backend:
    """Resolve (with `resolve_path`'s keywords) and start one model outside a run."""
    resolved = resolve_path(kind, path, settings, **kw)
    return resolved.kind().start(resolved)
