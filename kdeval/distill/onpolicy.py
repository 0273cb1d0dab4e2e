"""On-policy distillation (GKD, Agarwal et al. 2024, as TRL's GKDTrainer): the student writes some
of the responses it is trained on.

For each micro-batch a draw seeded by (seed, optimizer step, micro-batch) decides, with
probability `lmbda`, to replace the gold responses with ones the student samples from the prompts
(transformers' `generate`, `temperature`, at most `max_new_tokens`, cut after the first EOS, which
is kept and trained as TRL does). The teacher then scores those sequences like any other batch.
The draws and the sampling depend only on those three numbers, never on the global RNG, so a
resumed run and an uninterrupted one sample the same responses.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from kdeval.distill.data import TokenizedExample

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class OnPolicy:
    """How the student writes its own responses."""

    lmbda: float
    temperature: float
    max_new_tokens: int
    max_len: int
    seed: int
    pad_id: int
    eos_ids: tuple[int, ...]

    def _key(self, step: int, micro: int) -> str:
        return f"{self.seed}:{step}:{micro}"

    def chosen(self, step: int, micro: int) -> bool:
        """Whether micro-batch `micro` of optimizer step `step` is written by the student."""
        return random.Random(self._key(step, micro)).random() < self.lmbda

    def examples(
        self, student: PreTrainedModel, examples: Sequence[TokenizedExample], step: int, micro: int
    ) -> list[TokenizedExample]:
        """`examples` as given, or with the student's sampled responses when this micro-batch is chosen."""
        if not self.chosen(step, micro):
            return list(examples)
        seed = random.Random(self._key(step, micro)).getrandbits(63)
        return self.generate(student, examples, seed)

    def generate(
        self, student: PreTrainedModel, examples: Sequence[TokenizedExample], seed: int
    ) -> list[TokenizedExample]:
        """The prompts of `examples` followed by the student's responses (left-padded generation)."""
        prompts = [list(e.input_ids[: e.n_prompt]) for e in examples]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        out = _sample(student, ids, mask, self, seed)[:, width:].tolist()
        return [self._example(p, completion) for p, completion in zip(prompts, out, strict=True)]

    def _example(self, prompt: list[int], completion: list[int]) -> TokenizedExample:
        stops = [i for i, t in enumerate(completion) if t in self.eos_ids]
        if stops:
            completion = completion[: stops[0] + 1]
        ids = (prompt + completion)[: max(self.max_len, len(prompt) + 1)]
        return TokenizedExample(tuple(int(t) for t in ids), len(prompt))


def _sample(
    student: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, how: OnPolicy, seed: int
) -> torch.Tensor:
    """transformers' generate, sampling as TRL's GKD does (no top-k / top-p cut), in eval mode and
    with its own RNG stream."""
    from transformers import GenerationConfig

    sample = how.temperature > 0
    config = GenerationConfig(
        max_new_tokens=how.max_new_tokens,
        do_sample=sample,
        temperature=how.temperature if sample else None,
        top_k=0 if sample else None,
        top_p=1.0 if sample else None,
        pad_token_id=how.pad_id,
        eos_token_id=list(how.eos_ids) or None,
    )
    device = student.device
    was_training = student.training
    student.eval()
    forked = [device] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=forked, device_type=device.type):
            torch.manual_seed(seed)
            out = student.generate(  # type: ignore[operator]
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
    finally:
        student.train(was_training)
    return out.cpu()
