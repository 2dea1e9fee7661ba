"""The α-term choices (fadkd/losses/kd.py): properties, hand-computed values, masks, ULD."""

import math

import pytest
import torch
import torch.nn.functional as F

from fadkd.losses.distill import DistillLoss, LossWeights, kd_kl
from fadkd.losses.kd import (
    KL_FAMILY,
    TermChoice,
    forward_kl,
    generalized_jsd,
    kd_term,
    reverse_kl,
    soft_ce,
    symmetric_kl,
    uld,
)
from fadkd.models.capture import Outputs

MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
B, L, V = 2, 5, 11
# p_s = (1/2, 1/2), p_t = (3/4, 1/4) at τ = 1
S2, T2 = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def entropy(logits, tau):
    p = F.softmax(logits / tau, -1)
    return -(p * p.log()).sum(-1)


def test_identical_distributions_give_zero_and_soft_ce_gives_the_entropy():
    logits = torch.randn(B, L, V) * 3
    for kind in ("forward_kl", "reverse_kl", "symmetric_kl", "jsd", "uld"):
        for beta in (0.0, 0.3, 1.0):
            value = kd_term(kind, logits, logits.clone(), 2.0, MASK, MASK, jsd_beta=beta)
            assert value.abs() < 1e-5, (kind, beta)
    # soft CE of p with itself is its entropy (times τ²), averaged over real tokens
    expected = 4.0 * entropy(logits, 2.0)[MASK.bool()].mean()
    torch.testing.assert_close(soft_ce(logits, logits, 2.0, MASK), expected)


@pytest.mark.parametrize("kind", [*KL_FAMILY, "uld"])
def test_non_negative_on_random_inputs(kind):
    for _ in range(5):
        s, t = torch.randn(B, L, V) * 3, torch.randn(B, L, V) * 3
        assert kd_term(kind, s, t, 1.5, MASK, MASK, jsd_beta=0.7) >= 0


def test_hand_computed_values():
    kl_ts = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812
    kl_st = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # 0.143841
    m = (0.625, 0.375)  # β = 1/2: (p_t + p_s) / 2
    jsd = 0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])) + 0.5 * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    )
    assert jsd == pytest.approx(0.033822, abs=1e-6)
    assert forward_kl(S2, T2, 1.0).item() == pytest.approx(0.130812, abs=1e-6)
    assert reverse_kl(S2, T2, 1.0).item() == pytest.approx(0.143841, abs=1e-6)
    assert symmetric_kl(S2, T2, 1.0).item() == pytest.approx(kl_ts + kl_st, abs=1e-6)
    assert generalized_jsd(S2, T2, 1.0, beta=0.5).item() == pytest.approx(jsd, abs=1e-6)
    assert soft_ce(S2, T2, 1.0).item() == pytest.approx(math.log(2.0), abs=1e-6)  # -(3/4 + 1/4)·log(1/2)
    assert uld(S2, T2).item() == pytest.approx(0.5, abs=1e-6)  # |1/2 - 3/4| + |1/2 - 1/4|
    # β = 0.9 by hand: m = 0.9·p_t + 0.1·p_s
    m9 = (0.9 * 0.75 + 0.05, 0.9 * 0.25 + 0.05)
    j9 = 0.9 * (0.75 * math.log(0.75 / m9[0]) + 0.25 * math.log(0.25 / m9[1])) + 0.1 * (
        0.5 * math.log(0.5 / m9[0]) + 0.5 * math.log(0.5 / m9[1])
    )
    assert generalized_jsd(S2, T2, 1.0, beta=0.9).item() == pytest.approx(j9, abs=1e-6)


def test_forward_kl_is_the_default_term_and_matches_kl_div():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    ref = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="batchmean")
    assert kd_kl is forward_kl
    torch.testing.assert_close(forward_kl(s, t, 2.0), 4 * ref)
    torch.testing.assert_close(reverse_kl(s, t, 2.0), 4 * F.kl_div(
        F.log_softmax(t / 2, -1), F.log_softmax(s / 2, -1), log_target=True, reduction="batchmean"))  # fmt: skip


def test_jsd_endpoints_bounds_and_symmetry():
    s, t = torch.randn(6, V) * 4, torch.randn(6, V) * 4
    torch.testing.assert_close(generalized_jsd(s, t, 1.0, beta=0.0), forward_kl(s, t, 1.0))
    torch.testing.assert_close(generalized_jsd(s, t, 1.0, beta=1.0), reverse_kl(s, t, 1.0))
    half = generalized_jsd(s, t, 1.0, beta=0.5)
    assert 0 < half <= math.log(2) + 1e-6  # the Jensen-Shannon divergence is bounded by log 2
    torch.testing.assert_close(half, generalized_jsd(t, s, 1.0, beta=0.5))  # symmetric at β = 1/2
    torch.testing.assert_close(generalized_jsd(s, t, 1.0, beta=0.2), generalized_jsd(t, s, 1.0, beta=0.8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generalized_jsd(s, t, 1.0, beta=1.5)


@pytest.mark.parametrize("kind", KL_FAMILY)
def test_temperature_scaling_is_tau_squared(kind):
    s, t = torch.randn(3, V), torch.randn(3, V)
    for tau in (1.0, 2.0, 4.0):
        plain = kd_term(kind, s / tau, t / tau, 1.0, jsd_beta=0.3)
        torch.testing.assert_close(kd_term(kind, s, t, tau, jsd_beta=0.3), tau**2 * plain)


def test_soft_ce_is_forward_kl_plus_teacher_entropy_with_the_same_gradient():
    s, t = torch.randn(B, L, V), torch.randn(B, L, V)
    real = MASK.bool()
    offset = 4.0 * entropy(t, 2.0)[real].mean()
    torch.testing.assert_close(soft_ce(s, t, 2.0, MASK), forward_kl(s, t, 2.0, MASK) + offset)
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    soft_ce(a, t, 2.0, MASK).backward()
    forward_kl(b, t, 2.0, MASK).backward()
    torch.testing.assert_close(a.grad, b.grad)
    # the minimiser over the student is the teacher: moving away raises the value
    assert soft_ce(t + 0.3 * torch.randn_like(t), t, 2.0, MASK) > soft_ce(t, t, 2.0, MASK)


def pad(x, n, value=float("nan")):
    shape = list(x.shape)
    shape[1] = n
    return torch.cat([x, torch.full(shape, value)], dim=1)


@pytest.mark.parametrize("kind", [*KL_FAMILY, "uld"])
def test_masked_tokens_never_count(kind):
    s, t = torch.randn(B, L, V), torch.randn(B, L, V)
    ref = kd_term(kind, s, t, 2.0, MASK, MASK, jsd_beta=0.4)
    big = torch.cat([MASK, torch.zeros(B, 3, dtype=MASK.dtype)], 1)
    s_pad = pad(s, 3).requires_grad_()
    got = kd_term(kind, s_pad, pad(t, 3, 1e30), 2.0, big, big, jsd_beta=0.4)
    torch.testing.assert_close(got, ref)
    got.backward()
    assert torch.isfinite(s_pad.grad).all() and s_pad.grad[1, 3:].abs().sum() == 0
    s2 = s.clone()
    s2[1, 3:] = 7.0  # padded positions inside the length change nothing
    torch.testing.assert_close(kd_term(kind, s2, t, 2.0, MASK, MASK, jsd_beta=0.4), ref)
    # the value is the token-weighted mean of the rows' real tokens
    one = kd_term(kind, s[:1], t[:1], 2.0, MASK[:1], MASK[:1], jsd_beta=0.4)
    two = kd_term(kind, s[1:, :3], t[1:, :3], 2.0, MASK[1:, :3], MASK[1:, :3], jsd_beta=0.4)
    torch.testing.assert_close(ref, (5 * one + 3 * two) / 8)


def test_uld_vocabularies_of_different_sizes_and_orders():
    student = torch.log(torch.tensor([[1 / 3, 1 / 3, 1 / 3]]))
    teacher = torch.log(torch.tensor([[0.75, 0.25]]))
    # sorted, the teacher padded with a zero: |1/3 - 3/4| + |1/3 - 1/4| + |1/3 - 0|
    assert uld(student, teacher).item() == pytest.approx(5 / 6, abs=1e-6)
    t = torch.randn(4, 7)
    assert uld(t[:, torch.randperm(7)], t).abs() < 1e-6  # a permuted vocabulary is the same distribution
    s = torch.randn(4, 9)
    assert 0 <= uld(s, t) <= 2
    torch.testing.assert_close(uld(s, t), uld(t, s))


def test_uld_aligns_positions_by_truncation_to_the_shorter_side():
    s, t = torch.randn(2, 6, 9), torch.randn(2, 4, 5)  # other lengths, other vocabularies
    s_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    t_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    got = uld(s, t, 1.0, s_mask, t_mask)
    # row 0: 4 aligned positions (teacher shorter); row 1: 2 (student shorter)
    per = [uld(s[0, i : i + 1], t[0, i : i + 1]) for i in range(4)] + [
        uld(s[1, i : i + 1], t[1, i : i + 1]) for i in range(2)
    ]
    torch.testing.assert_close(got, torch.stack(per).mean())


def test_choice_in_distill_loss_formula_and_padded_vocabulary():
    s_logits, t_logits = torch.randn(B, L, 13), torch.randn(B, L, 16)  # 11 real tokens, padded to 13 and 16
    student = Outputs(logits=s_logits, hidden={}, attentions={}, mask=MASK)
    teacher = Outputs(logits=t_logits, hidden={}, attentions={}, mask=MASK)
    loss = DistillLoss(LossWeights(ce=0.0), [], {}, {}, False, choice=TermChoice(kd="reverse_kl", kd_vocab=11))
    assert str(loss) == "L = 1.0*RKL(τ=2.0)"
    total, terms = loss(student, teacher)
    torch.testing.assert_close(terms["kd"], reverse_kl(s_logits[..., :11], t_logits[..., :11], 2.0, MASK))
    jsd = DistillLoss(LossWeights(ce=0.0), [], {}, {}, False, choice=TermChoice(kd="jsd", jsd_beta=0.25))
    assert str(jsd) == "L = 1.0*JSD(β=0.25, τ=2.0)"
    assert str(DistillLoss(LossWeights(), [], {}, {}, False)) == "L = 1.0*KL(τ=2.0) + 1.0*ce"  # the default
