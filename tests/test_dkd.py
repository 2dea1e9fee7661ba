"""Decoupled KD (loss.kd=dkd, fadkd/losses/dkd.py): the decomposition of KL, its reduction to forward KL,
and the usual properties."""

import pytest
import torch

from fadkd.losses.distill import DistillLoss, LossWeights
from fadkd.losses.dkd import dkd, dkd_parts, dkd_target, lm_targets
from fadkd.losses.kd import TermChoice, _kl, _soften, forward_kl, kd_label
from fadkd.models.capture import Outputs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_kl_is_tckd_plus_weighted_nckd(temperature):
    s, t = torch.randn(64, 10) * 3, torch.randn(64, 10) * 3
    target = torch.randint(0, 10, (64,))
    tckd, nckd, p_target = dkd_parts(s, t, target, temperature)
    log_s, log_t, _ = _soften(s, t, temperature, None)
    kl = _kl(log_t, log_s)
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, kl, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p_target, log_t.exp().gather(-1, target[:, None]).squeeze(-1))


def test_dkd_with_a_1_and_b_1_minus_p_target_is_forward_kl():
    s, t = torch.randn(32, 7) * 2, torch.randn(32, 7) * 2
    target = torch.randint(0, 7, (32,))
    _, _, p_target = dkd_parts(s, t, target, 2.0)
    reduced = dkd(s, t, 2.0, target=target, alpha=1.0, beta=1 - p_target)
    torch.testing.assert_close(reduced, forward_kl(s, t, 2.0), atol=1e-6, rtol=1e-5)


def test_dkd_per_token_reduces_to_forward_kl_with_a_mask():
    s, t = torch.randn(3, 6, 11), torch.randn(3, 6, 11)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    target = torch.randint(0, 11, (3, 6))
    _, _, p_target = dkd_parts(s, t, target, 1.5)
    reduced = dkd(s, t, 1.5, mask, target, alpha=1.0, beta=1 - p_target)
    torch.testing.assert_close(reduced, forward_kl(s, t, 1.5, mask), atol=1e-6, rtol=1e-5)


def test_two_classes_have_no_non_target_part():
    """Hand-checked case: with V = 2 the non-target distribution is one class, so NCKD = 0 and DKD = a·KL."""
    s, t = torch.tensor([[0.3, -0.2]]), torch.tensor([[2.0, 0.5]])
    p_t, p_s = torch.softmax(t, -1)[0], torch.softmax(s, -1)[0]
    by_hand = float((p_t * (p_t / p_s).log()).sum())
    value = dkd(s, t, 1.0, target=torch.tensor([1]), alpha=0.5, beta=100.0)
    assert value.item() == pytest.approx(0.5 * by_hand, rel=1e-5)


def test_zero_on_identical_inputs_and_non_negative():
    z = torch.randn(16, 9) * 3
    assert dkd(z, z.clone(), 2.0, alpha=1.0, beta=8.0).abs() < 1e-6
    for _ in range(5):
        s, t = torch.randn(16, 9) * 3, torch.randn(16, 9) * 3
        assert dkd(s, t, 2.0, target=torch.randint(0, 9, (16,))) >= 0


def test_padding_changes_neither_value_nor_gradient():
    s, t = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    target = torch.randint(0, 7, (2, 4))
    s_pad = torch.cat([s, torch.full((2, 3, 7), float("nan"))], 1).requires_grad_(True)
    t_pad = torch.cat([t, torch.full((2, 3, 7), float("inf"))], 1)
    mask_pad = torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], 1)
    target_pad = torch.cat([target, torch.full((2, 3), 5)], 1)
    s_ref = s.clone().requires_grad_(True)
    ref = dkd(s_ref, t, 2.0, mask, target)
    padded = dkd(s_pad, t_pad, 2.0, mask_pad, target_pad)
    torch.testing.assert_close(padded, ref)
    (ref + padded).backward()
    assert torch.isfinite(s_pad.grad).all() and (s_pad.grad[:, 4:] == 0).all()
    torch.testing.assert_close(s_pad.grad[:, :4], s_ref.grad)


def test_target_is_the_label_else_the_teachers_argmax():
    teacher = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    assert dkd_target(teacher, torch.tensor([0, -100, 1])).tolist() == [0, 0, 1]
    assert dkd_target(teacher, None).tolist() == [1, 0, 2]
    labels = torch.tensor([[5, 6, 7, 8]])
    assert lm_targets(labels, torch.Size([1, 4])).tolist() == [[6, 7, 8, -100]]


def _lm_outputs(logits, mask):
    return Outputs(logits=logits, hidden={}, attentions={}, mask=mask)


def test_the_objective_uses_labels_as_targets():
    choice = TermChoice(kd="dkd", dkd_weights=(1.0, 8.0))
    loss = DistillLoss(LossWeights(alpha=1.0, ce=0.0), [], {}, {}, False, choice=choice)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([2, -100, 0, 1])
    mask = torch.ones(4, 5, dtype=torch.long)
    _, terms = loss(_lm_outputs(s, mask), _lm_outputs(t, mask), labels)
    torch.testing.assert_close(terms["kd"], dkd(s, t, 2.0, target=dkd_target(t, labels), alpha=1.0, beta=8.0))
    assert str(loss) == "L = 1.0*DKD(a=1.0, b=8.0, τ=2.0)" == "L = 1.0*" + kd_label("dkd", 2.0, 0.5, (1.0, 8.0))


def test_the_objective_on_a_causal_lm_reads_next_tokens_and_ignores_padding():
    choice = TermChoice(kd="dkd", dkd_weights=(0.5, 2.0))
    loss = DistillLoss(LossWeights(alpha=1.0, ce=0.0), [], {}, {}, False, choice=choice)
    s, t = torch.randn(2, 5, 9), torch.randn(2, 5, 9)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ids = torch.randint(0, 9, (2, 5))
    _, terms = loss(_lm_outputs(s, mask), _lm_outputs(t, mask), ids)
    target = lm_targets(ids.masked_fill(mask == 0, -100), mask.shape)
    torch.testing.assert_close(terms["kd"], dkd(s, t, 2.0, mask, dkd_target(t, target), 0.5, 2.0))
    ids_other_padding = ids.clone()
    ids_other_padding[1, 3:] = 0  # the padding's token ids never count
    _, again = loss(_lm_outputs(s, mask), _lm_outputs(t, mask), ids_other_padding)
    torch.testing.assert_close(again["kd"], terms["kd"])
