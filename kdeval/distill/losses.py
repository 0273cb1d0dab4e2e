"""Distillation losses: float32, log space, summed per token so callers average over valid tokens.

All divergences take log-probabilities over the same buckets: the full vocabulary (dense teacher)
or the teacher's top-k tokens plus one tail bucket holding the rest of the mass (top-k cache;
the student is folded to the same buckets with `fold`). Inputs are finite everywhere: the tail
is a log-sum-exp over the remaining tokens, never log(1 - sum(top-k)), so no log(0) appears.

The loss over a sequence batch is computed chunk by chunk over the token dimension
(`chunked_loss_sums`): only one chunk's logits exist at a time, forward and backward.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from kdeval.distill.methods import Divergence


def forward_kl(p_logp: Tensor, q_logp: Tensor) -> Tensor:
    """KL(p || q) per row, from log-probabilities (rows on the last axis)."""
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1)


def generalized_jsd(s_logp: Tensor, t_logp: Tensor, beta: float) -> Tensor:
    """TRL's generalized JSD: with M = beta*p_T + (1-beta)*p_S,
    beta*KL(p_T||M) + (1-beta)*KL(p_S||M); the endpoints are the limits TRL special-cases:
    beta=0 is forward KL(p_T||p_S), beta=1 reverse KL(p_S||p_T)."""
    if beta == 0.0:
        return forward_kl(t_logp, s_logp)
    if beta == 1.0:
        return forward_kl(s_logp, t_logp)
    log_m = _log_mix(t_logp, s_logp, beta)
    return beta * forward_kl(t_logp, log_m) + (1.0 - beta) * forward_kl(s_logp, log_m)


def total_variation(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """TVD = 0.5 * sum |p_T - p_S| (DistiLLM)."""
    return 0.5 * (t_logp.exp() - s_logp.exp()).abs().sum(-1)


def skew_kl(s_logp: Tensor, t_logp: Tensor, skew: float) -> Tensor:
    """Skew forward KL (DistiLLM): KL(p_T || skew*p_T + (1-skew)*p_S). DistiLLM drops the
    teacher-entropy term (same gradient); we keep it so the value is a true divergence >= 0."""
    return forward_kl(t_logp, _log_mix(t_logp, s_logp, skew))


def _log_mix(a_logp: Tensor, b_logp: Tensor, weight_a: float) -> Tensor:
    """log(w*a + (1-w)*b) for 0 < w < 1, without leaving log space."""
    return torch.logaddexp(a_logp + math.log(weight_a), b_logp + math.log1p(-weight_a))


def fold(logp: Tensor, index: Tensor, tail: bool) -> Tensor:
    """Log-probs of the `index` tokens, plus (when `tail`) one bucket for all other tokens."""
    top = logp.gather(-1, index)
    if not tail:
        return top
    rest = logp.scatter(-1, index, float("-inf"))
    return torch.cat([top, torch.logsumexp(rest, -1, keepdim=True)], -1)


# -- the built-in methods' divergences (registered in kdeval.distill.methods) ------------------


def kd_divergence(s_logp: Tensor, t_logp: Tensor, spec: LossSpec) -> Tensor:
    return forward_kl(t_logp, s_logp)


def jsd_divergence(s_logp: Tensor, t_logp: Tensor, spec: LossSpec) -> Tensor:
    return generalized_jsd(s_logp, t_logp, spec.beta)


def tvd_divergence(s_logp: Tensor, t_logp: Tensor, spec: LossSpec) -> Tensor:
    return total_variation(s_logp, t_logp)


def skl_divergence(s_logp: Tensor, t_logp: Tensor, spec: LossSpec) -> Tensor:
    return skew_kl(s_logp, t_logp, spec.skew)


@functools.cache
def _divergence(method: str) -> Divergence:
    from kdeval.distill.methods import get

    return get(method).divergence_fn()


@dataclass(frozen=True)
class LossSpec:
    """Which loss, and its knobs (see `kdeval.distill.config.DistillConfig`)."""

    method: str = "kd"
    temperature: float = 1.0
    alpha: float = 0.5
    beta: float = 0.5
    skew: float = 0.1

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss compares token distributions (kdeval.distill.methods)."""
        from kdeval.distill.methods import get

        return get(self.method).token_level

    def divergence(self, s_logp: Tensor, t_logp: Tensor) -> Tensor:
        """Per-row divergence of the student from the teacher (the method's registered one)."""
        return _divergence(self.method)(s_logp, t_logp, self)

    def combine(self, sums: Tensor, n_tokens: int) -> Tensor:
        """The loss from summed [CE, divergence] over `n_tokens` valid tokens."""
        ce, div = sums[0], sums[1]
        if not self.uses_teacher:
            return ce / n_tokens
        soft = (self.temperature**2) * div
        return (self.alpha * ce + (1.0 - self.alpha) * soft) / n_tokens


@dataclass
class TeacherTarget:
    """The teacher's distribution for some token rows, at the loss temperature.

    logp:  [n, V] dense log-probs, or [n, k(+1)] log-probs of the `index` tokens (+ tail bucket).
    index: None for dense; else [n, k] vocabulary ids of the buckets.
    """

    logp: Tensor
    index: Tensor | None = None


#: Rows [start, end) of the selected tokens -> the teacher's distribution on them.
TeacherFn = Callable[[int, int], TeacherTarget]
#: Hidden states [n, H] -> logits [n, V] (the model's output layer, trimmed to the real vocabulary).
HeadFn = Callable[[Tensor], Tensor]


def token_loss_sums(spec: LossSpec, logits: Tensor, targets: Tensor, teacher: TeacherTarget | None) -> Tensor:
    """[sum of CE, sum of divergence] over the rows of `logits` (float32)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    ce = F.nll_loss(logp, targets, reduction="sum")
    if teacher is None or not spec.uses_teacher:
        return torch.stack([ce, torch.zeros_like(ce)])
    # At T=1 the softened distribution is the one CE used: reuse it (one V-wide tensor less).
    s_logp = logp if spec.temperature == 1.0 else F.log_softmax(logits.float() / spec.temperature, dim=-1)
    t_logp = teacher.logp.float()
    if teacher.index is not None:
        s_logp = fold(s_logp, teacher.index, tail=t_logp.shape[-1] > teacher.index.shape[-1])
    return torch.stack([ce, spec.divergence(s_logp, t_logp).sum()])


def chunked_loss_sums(
    spec: LossSpec,
    hidden: Tensor,
    head: HeadFn,
    targets: Tensor,
    teacher: TeacherFn | None,
    chunk_size: int,
) -> Tensor:
    """[CE sum, divergence sum] over the rows of `hidden` [N, H], `chunk_size` rows at a time.

    Each chunk runs under activation checkpointing: its logits (and the teacher's) are freed
    after the forward and recomputed one chunk at a time in the backward, so peak memory holds
    one chunk x vocabulary, not N x vocabulary. With one chunk nothing is recomputed.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(2, dtype=torch.float32)

    def one_chunk(h: Tensor, y: Tensor, start: int, end: int) -> Tensor:
        with torch.no_grad():
            target = teacher(start, end) if teacher is not None else None
        return token_loss_sums(spec, head(h), y, target)

    return chunked_sums(hidden, targets, one_chunk, chunk_size, hidden.new_zeros(2, dtype=torch.float32))


#: (hidden rows, their targets, start, end) -> sums over those rows (any shape, the same for every chunk)
ChunkFn = Callable[[Tensor, Tensor, int, int], Tensor]


def chunked_sums(hidden: Tensor, targets: Tensor, fn: ChunkFn, chunk_size: int, total: Tensor) -> Tensor:
    """`total` plus `fn` summed over the rows of `hidden` [N, H], `chunk_size` rows at a time: the
    one chunk loop of the trainer's loss and of the fidelity phase (kdeval.fidelity).

    With gradients each chunk runs under activation checkpointing, so its logits are freed after
    the forward and recomputed in the backward; with one chunk nothing is recomputed.
    """
    n = hidden.shape[0]
    recompute = torch.is_grad_enabled() and hidden.requires_grad and n > chunk_size
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        h, y = hidden[start:end], targets[start:end]
        part = checkpoint(fn, h, y, start, end, use_reentrant=False) if recompute else fn(h, y, start, end)
        total = total + part
    return total
