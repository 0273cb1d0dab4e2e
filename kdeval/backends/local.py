"""What the local backends (vLLM, transformers) share: checking a checkpoint (kdeval.modeldir), resolving
`dtype: auto`, fitting the context window, and the checkpoint's identity."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.backends.base import GenerationSettings
from kdeval.backends.registry import BackendKind, ResolvedModel
from kdeval.config import model_fingerprint
from kdeval.modeldir import check_model

if TYPE_CHECKING:
    from kdeval.config import ModelSpec, RunSpec

_ALIASES = {"half": "float16", "float": "float32"}


def resolve_dtype(path: str, dtype: str) -> str:
    """`auto` is the checkpoint's own dtype, read from config.json as transformers reads it
    (float32 when the config names none). vLLM's own `auto` would run a float32 checkpoint in
    half precision, so kdeval resolves it once and gives every backend the same dtype.

    A hub id (no local config) keeps `auto` for the backend to resolve.
    """
    dtype = _ALIASES.get(dtype, dtype)
    if dtype != "auto":
        return dtype
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return "auto"
    try:
        data: Any = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "auto"  # the backend reports the broken file when it loads it
    named = data.get("torch_dtype") or data.get("dtype") if isinstance(data, dict) else None
    return _ALIASES.get(str(named), str(named)) if named else "float32"


def fit_context(path: str, settings: GenerationSettings) -> GenerationSettings:
    """Cap max_model_len at the model's own context: vLLM refuses a longer one, and prompts are
    cut from the left to fit either way."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return settings
    try:
        n = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return settings
    if isinstance(n, int) and 0 < n < settings.max_model_len:
        return replace(settings, max_model_len=n)
    return settings


def model_settings(model: ModelSpec, run: RunSpec, path: str) -> GenerationSettings:
    """The run's generation settings as this model runs them."""
    settings = replace(
        run.generation(),
        dtype=resolve_dtype(path, model.dtype or run.dtype),
        max_model_len=model.max_model_len or run.max_model_len,
    )
    return fit_context(path, settings)


def resolve_local(
    kind: BackendKind, model: ModelSpec, run: RunSpec, options: dict[str, Any]
) -> ResolvedModel:
    """The checks every local checkpoint gets (kdeval.modeldir: config, tokenizer, weights, remote
    code, or a reachable hub id), and its resolved form. Nothing starts here."""
    check_model(
        model.name,
        model.path,
        trust_remote_code=run.trust_remote_code,
        where=model.where_of(""),
        extra_types=kind.model_types,
    )
    assert model.path is not None
    return ResolvedModel(
        name=model.name,
        role=model.role,
        backend=kind.name,
        path=model.path,
        fingerprint=model_fingerprint(model.path),
        settings=model_settings(model, run, model.path),
        options=options,
        output_options=kind.output_options(options),
        use_chat_template=run.use_chat_template,
        trust_remote_code=run.trust_remote_code,
    )
