"""The backend protocol. Backends see token ids only: rendering and decoding are shared
(`kdeval.backends.prompting`) so the same token ids give the same text on every backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from kdeval.tasks import Output, Request

if TYPE_CHECKING:
    from kdeval.backends.prompting import PromptCodec


@dataclass(frozen=True)
class GenerationSettings:
    """Settings shared by every request of a run; recorded in results.json."""

    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    dtype: str = "auto"  # the checkpoint's own (resolved per model, kdeval.backends.local)
    max_model_len: int = 2048
    batch_size: int = 16  # transformers backend only; vLLM schedules its own batches


@dataclass
class ModelInfo:
    """Facts about a loaded model, recorded per model in results.json."""

    chat_template: bool
    n_params: int | None = None
    dtype: str = ""
    extra: dict[str, str] = field(default_factory=dict)


OnDone = Callable[[int, Output], None]


class Backend(Protocol):
    name: str
    info: ModelInfo

    @property
    def codec(self) -> PromptCodec | None:
        """The model's prompt codec; None for a server without a local tokenizer (text prompts)."""

    def run(self, requests: Sequence[Request], on_done: OnDone) -> None:
        """Serve all requests; call on_done(index, output) as each one completes (in any order)."""

    def close(self) -> None:
        """Free the engine (processes, memory)."""
