"""Teacher-forced passes: the student over the teacher's tokens, beside the teacher's distribution.

The student always runs here in transformers (full logits). The teacher's distribution on the
same rows comes from one of two sources:

- `DenseTeacher`: the teacher's weights loaded here too (full logits; optionally cut to top-k
  plus a tail bucket, which is how tests check the top-k path against the dense one);
- `ServedTeacher`: a kdeval backend that returns top-k `prompt_logprobs` (vLLM engine or an
  OpenAI-compatible vLLM server), folded to k buckets + tail by the trainer's `served_rows`.

Rows are computed chunk by chunk with the trainer's chunk loop (`kdeval.distill.losses`), so one
chunk x vocabulary of logits exists at a time, and summed per example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from kdeval.distill.data import IGNORE, Batch, TokenizedExample, collate
from kdeval.distill.losses import TeacherFn, TeacherTarget, chunked_sums
from kdeval.distill.models import hidden_states, output_head
from kdeval.distill.topk import PromptTopk, served_rows, topk_rows
from kdeval.fidelity.measures import WIDTH, token_rows

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class TeacherSource(Protocol):
    """The teacher's distribution on the response rows of a batch, in row order."""

    @property
    def name(self) -> str:
        """ "dense", or "top-K" (KL, reverse KL and JSD are then lower bounds)."""

    def rows(self, batch: Batch, seqs: Sequence[TokenizedExample], valid: Tensor) -> TeacherFn: ...


@dataclass
class DenseTeacher:
    model: PreTrainedModel
    vocab: int
    k: int | None = None

    @property
    def name(self) -> str:
        return "dense" if self.k is None or self.k >= self.vocab else f"top-{self.k}"

    def rows(self, batch: Batch, seqs: Sequence[TokenizedExample], valid: Tensor) -> TeacherFn:
        head = output_head(self.model, self.vocab)
        hidden = hidden_states(self.model, batch)[:, :-1][valid.to(self.model.device)]

        def target(start: int, end: int) -> TeacherTarget:
            logits = head(hidden[start:end]).float().cpu()
            if self.k is None:
                return TeacherTarget(F.log_softmax(logits, dim=-1))
            index, logp = topk_rows(logits, self.k, 1.0)
            return TeacherTarget(logp, index if self.k < self.vocab else None)

        return target


@dataclass
class ServedTeacher:
    backend: PromptTopk
    vocab: int
    k: int

    @property
    def name(self) -> str:
        return f"top-{self.k}"

    def rows(self, batch: Batch, seqs: Sequence[TokenizedExample], valid: Tensor) -> TeacherFn:
        got: dict[int, tuple[Tensor, Tensor]] = {}

        def done(i: int, prompt_logprobs: list[Any]) -> None:
            got[i] = served_rows(prompt_logprobs, seqs[i], self.k, self.vocab)

        self.backend.prompt_topk([list(s.input_ids) for s in seqs], self.k, done)
        index = torch.cat([got[i][0] for i in range(len(seqs))]).long()
        logp = torch.cat([got[i][1] for i in range(len(seqs))])
        if self.k >= self.vocab:  # every token is a bucket: no tail (the student's would be empty)
            logp = logp[:, : self.k]
        return lambda start, end: TeacherTarget(logp[start:end], index[start:end])


def fit(seq: TokenizedExample, limit: int) -> TokenizedExample:
    """Left-truncate a sequence to the model's window, keeping at least one prompt token."""
    cut = len(seq.input_ids) - limit
    if cut <= 0:
        return seq
    return TokenizedExample(seq.input_ids[cut:], max(1, seq.n_prompt - cut))


def example_rows(
    student: PreTrainedModel,
    vocab: int,
    examples: Sequence[Sequence[TokenizedExample]],
    teacher: TeacherSource,
    *,
    pad_id: int,
    on_done: Callable[[int, list[float]], None],
    batch_size: int = 8,
    chunk_size: int = 512,
) -> None:
    """Summed fidelity rows (`kdeval.fidelity.measures`) of each example (all its sequences:
    one per stage), reported through on_done(example index, row) as batches finish."""
    head = output_head(student.eval(), vocab)
    with torch.no_grad():
        for first in range(0, len(examples), batch_size):
            group = examples[first : first + batch_size]
            seqs = [s for ex in group for s in ex]
            owner = torch.tensor([i for i, ex in enumerate(group) for _ in ex], dtype=torch.long)
            sums = torch.zeros((len(group), WIDTH), dtype=torch.float64)
            if any(s.n_response > 0 for s in seqs):
                sums = _batch_sums(student, head, seqs, owner, sums, teacher, pad_id, chunk_size)
            for i in range(len(group)):
                on_done(first + i, sums[i].tolist())


def _batch_sums(
    student: PreTrainedModel,
    head: Callable[[Tensor], Tensor],
    seqs: list[TokenizedExample],
    owner: Tensor,
    zero: Tensor,
    teacher: TeacherSource,
    pad_id: int,
    chunk_size: int,
) -> Tensor:
    batch = collate(seqs, pad_id)
    valid = batch.labels[:, 1:] != IGNORE
    owner = owner.repeat_interleave(valid.sum(dim=1))  # the example of every response row
    targets = batch.labels[:, 1:][valid]
    hidden = hidden_states(student, batch)[:, :-1][valid.to(student.device)]
    target_of = teacher.rows(batch, seqs, valid)

    def chunk(h: Tensor, y: Tensor, start: int, end: int) -> Tensor:
        rows = token_rows(head(h).cpu(), target_of(start, end), y.cpu())
        return torch.zeros_like(zero).index_add_(0, owner[start:end], rows)

    return chunked_sums(hidden, targets, chunk, chunk_size, zero)
