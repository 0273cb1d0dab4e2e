"""Token-level fidelity of a student to its teacher: per-token rows in, per-example sums out.

Every measure is a ratio of sums over the teacher's tokens, so one example's row of sums is a
sufficient statistic (as `kdeval.metrics` rows are) and the bootstrap resamples examples:

    kl     mean KL(p_T || p_S) per token (nats)         rkl  mean KL(p_S || p_T)
    jsd    mean Jensen-Shannon divergence (nats)          top1 % of tokens where argmax p_S = argmax p_T
    nll    the student's mean NLL of the teacher's tokens ppl  exp(nll)
    ece    expected calibration error of the student's next-token confidence, in %: the student's
           top-1 probability against whether its top-1 is the teacher's token, 15 equal-width bins

The divergences are the trainer's own (`kdeval.distill.losses`), not a second copy. With a top-k
teacher (a served teacher's `prompt_logprobs`) both distributions are coarsened to the teacher's k
tokens plus one tail bucket holding the rest of the mass; by the data-processing inequality a
divergence of the coarsened pair is never above that of the full pair, so kl, rkl and jsd are
then lower bounds of the true values (equal when k covers the vocabulary). top1, nll and ece use
the student's full distribution and the teacher's argmax, which top-k keeps exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kdeval.metrics import Metric

if TYPE_CHECKING:
    from torch import Tensor

    from kdeval.distill.losses import TeacherTarget

ECE_BINS = 15
#: columns of a row: the sums, then (count, confidence sum, correct sum) per ECE bin
SUMS = ("kl", "rkl", "jsd", "top1", "nll", "tokens")
WIDTH = len(SUMS) + 3 * ECE_BINS
_COL = {name: i for i, name in enumerate(SUMS)}
_TOKENS = _COL["tokens"]


def token_rows(s_logits: Tensor, teacher: TeacherTarget, targets: Tensor) -> Tensor:
    """[n, WIDTH] per-token rows from the student's logits [n, V], the teacher's distribution on
    the same rows (dense, or top-k + tail) and the teacher's tokens [n]."""
    import torch
    import torch.nn.functional as F

    from kdeval.distill.losses import fold, forward_kl, generalized_jsd

    s_full = F.log_softmax(s_logits.float(), dim=-1)
    t_logp = teacher.logp.float()
    if teacher.index is None:
        s_logp, t_top = s_full, t_logp.argmax(-1)
    else:
        k = teacher.index.shape[-1]
        s_logp = fold(s_full, teacher.index, tail=t_logp.shape[-1] > k)
        t_top = teacher.index.gather(-1, t_logp[:, :k].argmax(-1, keepdim=True)).squeeze(-1)
    conf_log, s_top = s_full.max(-1)
    conf = conf_log.exp()
    hit = (s_top == targets).float()
    rows = torch.zeros((s_logits.shape[0], WIDTH), dtype=torch.float64)
    rows[:, _COL["kl"]] = forward_kl(t_logp, s_logp).double()
    rows[:, _COL["rkl"]] = forward_kl(s_logp, t_logp).double()
    rows[:, _COL["jsd"]] = (
        generalized_jsd(s_logp, t_logp, 0.5).double().clamp(min=0.0)
    )  # rounding: never below 0
    rows[:, _COL["top1"]] = (s_top == t_top).double()
    rows[:, _COL["nll"]] = -s_full.gather(-1, targets[:, None]).squeeze(-1).double()
    rows[:, _TOKENS] = 1.0
    b = (conf * ECE_BINS).long().clamp(max=ECE_BINS - 1)
    base = len(SUMS) + 3 * b
    at = torch.arange(rows.shape[0])
    rows[at, base] = 1.0
    rows[at, base + 1] = conf.double()
    rows[at, base + 2] = hit.double()
    return rows


# -- the measures: ratios of the summed rows -----------------------------------------------------


def _per_token(name: str, scale: float = 1.0) -> Callable[[np.ndarray], float]:
    col = _COL[name]

    def value(sums: np.ndarray) -> float:
        return scale * float(sums[col]) / float(sums[_TOKENS]) if sums[_TOKENS] > 0 else float("nan")

    return value


def _ppl(sums: np.ndarray) -> float:
    nll = _per_token("nll")(sums)
    return float("nan") if math.isnan(nll) else math.exp(min(nll, 700.0))


def ece(sums: np.ndarray) -> float:
    """Expected calibration error in %: sum over bins of |confidence - accuracy| weighted by the
    bin's share of tokens.

    >>> row = np.zeros(WIDTH); row[_TOKENS] = 2
    >>> b = len(SUMS) + 3 * 14; row[b:b + 3] = [2, 1.9, 1]  # two tokens at 95% confidence, one right
    >>> round(ece(row), 6)
    45.0
    """
    n = float(sums[_TOKENS])
    if n <= 0:
        return float("nan")
    bins = np.asarray(sums[len(SUMS) :], dtype=np.float64).reshape(ECE_BINS, 3)
    return 100.0 * float(np.abs(bins[:, 1] - bins[:, 2]).sum()) / n


def _no_text(hypothesis: str, references: object) -> list[float]:
    raise TypeError("fidelity rows come from token distributions, not from text")


@dataclass(frozen=True)
class Measure:
    """One fidelity measure: its name in results.json and rules, label, unit and direction."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    metric: Metric


def _measure(name: str, label: str, unit: str, fn: Callable[[np.ndarray], float], higher: bool) -> Measure:
    return Measure(name, label, unit, higher, Metric(name, label, _no_text, fn, higher_is_better=higher))


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        _measure("kl", "KL(T‖S)", "nats/token", _per_token("kl"), False),
        _measure("rkl", "KL(S‖T)", "nats/token", _per_token("rkl"), False),
        _measure("jsd", "JSD", "nats/token", _per_token("jsd"), False),
        _measure("top1", "top-1 agreement", "%", _per_token("top1", 100.0), True),
        _measure("nll", "student NLL", "nats/token", _per_token("nll"), False),
        _measure("ppl", "student perplexity", "", _ppl, False),
        _measure("ece", f"ECE ({ECE_BINS} bins)", "%", ece, False),
    )
}
