"""Distillation losses against hand-computed values and independent references (torch.distributions,
numpy in float64), plus the token bookkeeping: chunking, top-k folding, masks, batch composition."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from kdeval.distill.data import IGNORE, Batch, TokenizedExample, collate
from kdeval.distill.losses import (
    HeadFn,
    LossSpec,
    TeacherFn,
    TeacherTarget,
    chunked_loss_sums,
    fold,
    forward_kl,
    generalized_jsd,
    skew_kl,
    token_loss_sums,
    total_variation,
)
from kdeval.distill.objective import Objective
from kdeval.distill.topk import topk_rows


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny matrices gain nothing from a second thread, and on a shared 2-core machine the two
    # threads wait on each other: one thread runs these tests several times faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LOG_T = torch.log(torch.tensor([[0.5, 0.5]]))
LOG_S = torch.log(torch.tensor([[0.25, 0.75]]))


# --- hand-computed values ------------------------------------------------------------------------


def test_hand_computed_divergences() -> None:
    # KL(T||S) = .5 ln(.5/.25) + .5 ln(.5/.75) = .5 ln(4/3)
    assert forward_kl(LOG_T, LOG_S).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    # KL(S||T) = .25 ln(.5) + .75 ln(1.5)
    assert forward_kl(LOG_S, LOG_T).item() == pytest.approx(0.130812, abs=1e-6)
    assert total_variation(LOG_S, LOG_T).item() == pytest.approx(0.25, abs=1e-6)
    # M = .5 T + .5 S = (.375, .625); .5 KL(T||M) + .5 KL(S||M)
    assert generalized_jsd(LOG_S, LOG_T, 0.5).item() == pytest.approx(0.033822, abs=1e-6)
    # M = .1 T + .9 S = (.275, .725); KL(T||M)
    want = 0.5 * math.log(0.5 / 0.275) + 0.5 * math.log(0.5 / 0.725)
    assert skew_kl(LOG_S, LOG_T, 0.1).item() == pytest.approx(want, abs=1e-6)


def test_hand_computed_kd_loss_with_temperature() -> None:
    # Student logits (0, ln 3) -> p_S = (.25, .75) at T=1; at T=2 -> (1, sqrt 3)/(1 + sqrt 3).
    logits = torch.tensor([[0.0, math.log(3.0)]])
    teacher = TeacherTarget(LOG_T)  # uniform, the same at any temperature
    spec = LossSpec("kd", temperature=2.0, alpha=0.3)
    ce, div = token_loss_sums(spec, logits, torch.tensor([1]), teacher).tolist()
    assert ce == pytest.approx(-math.log(0.75), abs=1e-6)  # CE on unsoftened logits
    s = 1 / (1 + math.sqrt(3))
    assert div == pytest.approx(0.5 * math.log(0.5 / s) + 0.5 * math.log(0.5 / (1 - s)), abs=1e-6)
    loss = spec.combine(torch.tensor([ce, div]), 1).item()
    assert loss == pytest.approx(0.3 * ce + 0.7 * 4.0 * div, abs=1e-6)


def test_sft_ignores_the_teacher_and_averages_per_token() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    sums = token_loss_sums(LossSpec("sft"), logits, torch.tensor([1, 1]), TeacherTarget(LOG_T.repeat(2, 1)))
    assert sums[1].item() == 0.0
    assert LossSpec("sft").combine(sums, 2).item() == pytest.approx(
        (-math.log(0.75) - math.log(0.25)) / 2, abs=1e-6
    )


# --- independent references ----------------------------------------------------------------------


def _random_logp(seed: int, n: int = 6, v: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, v, generator=g) * 2
    t = torch.randn(n, v, generator=g) * 2
    return F.log_softmax(s, -1), F.log_softmax(t, -1)


def _np_jsd(s_logp: torch.Tensor, t_logp: torch.Tensor, beta: float) -> np.ndarray:
    """TRL's generalized JSD in float64 probability space, endpoints as the KL limits."""
    p_s, p_t = np.exp(s_logp.double().numpy()), np.exp(t_logp.double().numpy())

    def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.asarray(np.sum(p * (np.log(p) - np.log(q)), axis=-1))

    if beta == 0.0:
        return kl(p_t, p_s)
    if beta == 1.0:
        return kl(p_s, p_t)
    m = beta * p_t + (1 - beta) * p_s
    return np.asarray(beta * kl(p_t, m) + (1 - beta) * kl(p_s, m))


def test_forward_and_reverse_kl_match_torch_distributions() -> None:
    s, t = _random_logp(0)
    ref_fwd = kl_divergence(Categorical(logits=t), Categorical(logits=s))
    ref_rev = kl_divergence(Categorical(logits=s), Categorical(logits=t))
    torch.testing.assert_close(forward_kl(t, s), ref_fwd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(forward_kl(s, t), ref_rev, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(LossSpec("kd").divergence(s, t), ref_fwd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.1, 0.9])
def test_generalized_jsd_matches_numpy(beta: float) -> None:
    s, t = _random_logp(1)
    got = LossSpec("jsd", beta=beta).divergence(s, t).double().numpy()
    np.testing.assert_allclose(got, _np_jsd(s, t, beta), rtol=1e-5, atol=1e-6)


def test_jsd_endpoints_are_kl_and_finite_with_zero_mass() -> None:
    s, t = _random_logp(2)
    torch.testing.assert_close(
        generalized_jsd(s, t, 0.0), kl_divergence(Categorical(logits=t), Categorical(logits=s))
    )
    torch.testing.assert_close(
        generalized_jsd(s, t, 1.0), kl_divergence(Categorical(logits=s), Categorical(logits=t))
    )
    # Near the endpoints the mixture stays finite and the gradient too (no log(0)).
    s = s.clone().requires_grad_(True)
    for beta in (1e-6, 1 - 1e-6):
        generalized_jsd(s, t, beta).sum().backward()
        assert s.grad is not None and torch.isfinite(s.grad).all()


def test_tvd_and_skew_kl_match_numpy() -> None:
    s, t = _random_logp(3)
    p_s, p_t = np.exp(s.double().numpy()), np.exp(t.double().numpy())
    np.testing.assert_allclose(total_variation(s, t).numpy(), 0.5 * np.abs(p_t - p_s).sum(-1), rtol=1e-5)
    m = 0.1 * p_t + 0.9 * p_s
    np.testing.assert_allclose(skew_kl(s, t, 0.1).numpy(), (p_t * np.log(p_t / m)).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("method", ["kd", "jsd", "tvd", "skl"])
def test_divergences_vanish_at_equality_and_are_positive(method: str) -> None:
    s, t = _random_logp(4)
    spec = LossSpec(method)
    assert spec.divergence(t, t).abs().max().item() < 1e-6
    assert (spec.divergence(s, t) > 0).all()


# --- top-k cache buckets -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["kd", "jsd", "tvd", "skl"])
def test_topk_with_k_equal_vocab_equals_dense(method: str) -> None:
    g = torch.Generator().manual_seed(5)
    t_logits, s_logits = torch.randn(7, 13, generator=g), torch.randn(7, 13, generator=g)
    targets = torch.randint(0, 13, (7,), generator=g)
    spec = LossSpec(method, temperature=1.7)
    dense = token_loss_sums(spec, s_logits, targets, TeacherTarget(F.log_softmax(t_logits / 1.7, -1)))
    index, logp = topk_rows(t_logits, 13, 1.7)
    assert logp.shape == (7, 13)  # no tail bucket when nothing is left out
    bucketed = token_loss_sums(spec, s_logits, targets, TeacherTarget(logp, index))
    torch.testing.assert_close(bucketed, dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["kd", "jsd", "tvd", "skl"])
def test_topk_buckets_hold_all_mass_and_never_exceed_dense(method: str) -> None:
    g = torch.Generator().manual_seed(6)
    t_logits, s_logits = torch.randn(9, 20, generator=g) * 3, torch.randn(9, 20, generator=g)
    index, logp = topk_rows(t_logits, 4, 1.0)
    assert logp.shape == (9, 5)
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(9), atol=1e-5, rtol=0)
    folded = fold(F.log_softmax(s_logits, -1), index, tail=True)
    torch.testing.assert_close(folded.logsumexp(-1), torch.zeros(9), atol=1e-5, rtol=0)
    # Merging outcomes never increases an f-divergence (data processing inequality).
    spec = LossSpec(method)
    dense = spec.divergence(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1))
    assert (spec.divergence(folded, logp) <= dense + 1e-6).all()


# --- chunking ------------------------------------------------------------------------------------


def _linear_head(weight: torch.Tensor) -> HeadFn:
    return lambda h: F.linear(h, weight)


@pytest.mark.parametrize("method", ["sft", "kd", "jsd"])
def test_chunked_equals_unchunked_loss_and_gradients(method: str) -> None:
    g = torch.Generator().manual_seed(7)
    hidden0, weight0 = torch.randn(10, 8, generator=g), torch.randn(17, 8, generator=g)
    teacher_logits = torch.randn(10, 17, generator=g)
    targets = torch.randint(0, 17, (10,), generator=g)

    def teacher(a: int, b: int) -> TeacherTarget:
        return TeacherTarget(F.log_softmax(teacher_logits[a:b] / 2, -1))

    results = []
    for chunk in (3, 1000):
        hidden, weight = hidden0.clone().requires_grad_(True), weight0.clone().requires_grad_(True)
        spec = LossSpec(method, temperature=2.0)
        sums = chunked_loss_sums(spec, hidden, _linear_head(weight), targets, teacher, chunk)
        spec.combine(sums, 10).backward()
        results.append((sums.detach(), hidden.grad, weight.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- masks, padding and batch composition on a tiny real model --------------------------------


class FixedTeacher:
    """A teacher given as explicit logits per (row, position), for changing chosen positions only."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def for_batch(self, batch: Batch, example_ids: Sequence[int], valid: torch.Tensor) -> TeacherFn:
        rows = self.logits[list(example_ids), : valid.shape[1]][valid]
        return lambda a, b: TeacherTarget(F.log_softmax(rows[a:b], -1))


@pytest.fixture(scope="module")
def tiny_lm() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


EXAMPLES = [
    TokenizedExample((1, 5, 6, 7, 8, 2), n_prompt=3),  # loss on the response 7, 8, EOS
    TokenizedExample((1, 9, 10, 11, 12, 13, 14, 15, 2), n_prompt=4),
]
PAD = 0


def _objective(model: torch.nn.Module, teacher: FixedTeacher, method: str = "kd") -> Objective:
    return Objective(LossSpec(method, temperature=1.5), model, 40, chunk_size=4, teacher=teacher)  # type: ignore[arg-type]


def _teacher_logits(seed: int = 8) -> torch.Tensor:
    return torch.randn(2, 12, 40, generator=torch.Generator().manual_seed(seed))


def test_labels_cover_response_tokens_only() -> None:
    batch = collate(EXAMPLES, PAD)
    assert batch.labels[0].tolist() == [IGNORE] * 3 + [7, 8, 2] + [IGNORE] * 3
    assert batch.n_targets == 3 + 5
    # EOS stays a target when the pad token is EOS (masks come from positions, not ids).
    assert collate(EXAMPLES, pad_id=2).labels[0].tolist()[:6] == [IGNORE] * 3 + [7, 8, 2]


def test_prompt_and_padding_positions_carry_no_loss(tiny_lm: torch.nn.Module) -> None:
    logits = _teacher_logits()
    base = _objective(tiny_lm, FixedTeacher(logits)).loss_sums(collate(EXAMPLES, PAD), [0, 1])
    changed = logits.clone()
    changed[0, :2] += 5 * torch.randn(2, 40)  # prompt positions of example 0 (targets 1..2)
    changed[0, 5:] += 5 * torch.randn(7, 40)  # past its last target: padding
    again = _objective(tiny_lm, FixedTeacher(changed)).loss_sums(collate(EXAMPLES, PAD), [0, 1])
    torch.testing.assert_close(again, base)
    other_pad = _objective(tiny_lm, FixedTeacher(logits)).loss_sums(collate(EXAMPLES, 33), [0, 1])
    torch.testing.assert_close(other_pad, base, rtol=1e-5, atol=1e-5)
    changed[0, 3] += torch.randn(40)  # a response position: must matter
    moved = _objective(tiny_lm, FixedTeacher(changed)).loss_sums(collate(EXAMPLES, PAD), [0, 1])
    assert not torch.allclose(moved, base)


@pytest.mark.parametrize("method", ["sft", "kd", "tvd"])
def test_loss_independent_of_batch_composition(tiny_lm: torch.nn.Module, method: str) -> None:
    obj = _objective(tiny_lm, FixedTeacher(_teacher_logits()), method)
    together = obj.loss_sums(collate(EXAMPLES, PAD), [0, 1])  # example 0 is padded here
    alone = [obj.loss_sums(collate([e], PAD), [i]) for i, e in enumerate(EXAMPLES)]
    torch.testing.assert_close(together, alone[0] + alone[1], rtol=1e-5, atol=1e-5)
