"""The training objective on a micro-batch: student hidden states once, loss chunk by chunk.

Returns *sums* over valid shifted response tokens; the trainer divides by the number of valid
tokens in the whole optimizer step, so the gradient does not depend on how the step's examples
are split into micro-batches, nor on how much padding a micro-batch carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from kdeval.distill.data import IGNORE, Batch
from kdeval.distill.losses import LossSpec, TeacherFn, TeacherTarget, chunked_loss_sums
from kdeval.distill.models import hidden_states, output_head

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class TeacherSource(Protocol):
    def for_batch(self, batch: Batch, example_ids: Sequence[int], valid: Tensor) -> TeacherFn:
        """The teacher's distribution on the batch's valid target rows (in row-major order)."""


class DenseTeacher:
    """A teacher model run alongside the student (no gradients, logits one chunk at a time)."""

    def __init__(self, model: PreTrainedModel, vocab: int, temperature: float) -> None:
        self.model, self.temperature = model.eval(), temperature
        self.head = output_head(model, vocab)

    def for_batch(self, batch: Batch, example_ids: Sequence[int], valid: Tensor) -> TeacherFn:
        with torch.no_grad():
            rows = hidden_states(self.model, batch)[:, :-1][valid]

        def target(start: int, end: int) -> TeacherTarget:
            logits = self.head(rows[start:end]).float()
            return TeacherTarget(F.log_softmax(logits / self.temperature, dim=-1))

        return target


class Objective:
    def __init__(
        self,
        spec: LossSpec,
        student: PreTrainedModel,
        vocab: int,
        chunk_size: int,
        teacher: TeacherSource | None = None,
    ) -> None:
        if spec.uses_teacher and teacher is None:
            raise ValueError(f"method {spec.method!r} needs a teacher source")
        self.spec, self.student, self.chunk_size, self.teacher = spec, student, chunk_size, teacher
        self.head = output_head(student, vocab)

    def loss_sums(self, batch: Batch, example_ids: Sequence[int], *, ce_only: bool = False) -> Tensor:
        """[CE sum, divergence sum] over the batch's valid shifted target tokens."""
        batch = batch.to(self.student.device)
        targets = batch.labels[:, 1:]
        valid = targets != IGNORE
        hidden = hidden_states(self.student, batch)[:, :-1][valid]
        spec = LossSpec(method="sft") if ce_only else self.spec
        teacher = None
        if spec.uses_teacher and self.teacher is not None:
            teacher = self.teacher.for_batch(batch, example_ids, valid)
        return chunked_loss_sums(spec, hidden, self.head, targets[valid], teacher, self.chunk_size)
