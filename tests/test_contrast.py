"""Contrastive feature alignment (loss.contrast, fadkd/losses/contrast.py): InfoNCE on pooled states."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model

from fadkd.losses.contrast import contrastive_loss, mean_pool, pool_real
from fadkd.losses.distill import DistillLoss, LossWeights
from fadkd.losses.mapping import LayerPair
from fadkd.models.capture import Outputs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_hand_computed_value():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # the norm never matters: cosine
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    # τ = 0.5: row 0 logits [1, c] / 0.5, own = 0; row 1 logits [0, c] / 0.5, own = 1
    row0 = -(2.0 - math.log(math.exp(2.0) + math.exp(2 * c)))
    row1 = -(2 * c - math.log(math.exp(0.0) + math.exp(2 * c)))
    assert contrastive_loss(s, t, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    queue = torch.tensor([[0.0, -1.0]])  # one more negative: cos −1 with row 1, 0 with row 0
    row0q = -(2.0 - math.log(math.exp(2.0) + math.exp(2 * c) + 1.0))
    row1q = -(2 * c - math.log(1.0 + math.exp(2 * c) + math.exp(-2.0)))
    assert contrastive_loss(s, t, 0.5, queue).item() == pytest.approx((row0q + row1q) / 2, rel=1e-6)


def _simplex(b, h):
    """b distinct unit teacher states summing to zero (a regular simplex): symmetric, so each own state is the
    best direction for its student row."""
    basis = torch.linalg.qr(torch.randn(h, b))[0].T  # b orthonormal rows
    return F.normalize(basis - basis.mean(0), dim=-1)


def test_minimal_when_every_student_state_equals_its_teacher_state():
    t = _simplex(6, 16)
    at_teacher = contrastive_loss(t.clone(), t, 0.2)
    for _ in range(20):  # any nearby student does worse
        assert contrastive_loss(t + 0.05 * torch.randn_like(t), t, 0.2) > at_teacher
    for perm in (torch.roll(torch.arange(6), 1), torch.tensor([1, 0, 2, 3, 4, 5])):  # wrong teachers: worse
        assert contrastive_loss(t[perm], t, 0.2) > at_teacher
    assert contrastive_loss(torch.randn(6, 16), t, 0.2) > at_teacher
    generic = torch.randn(8, 16)  # any distinct teacher states: own states win, loss -> 0 as τ -> 0
    assert contrastive_loss(generic.clone(), generic, 0.01) < 1e-6
    assert contrastive_loss(torch.randn(1, 16), torch.randn(1, 16), 0.1) == 0  # one candidate


def test_padding_changes_neither_value_nor_gradient():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).bool()
    hs, ht = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    garbage_s = torch.where(mask[..., None], hs, float("nan")).requires_grad_(True)
    garbage_t = torch.where(mask[..., None], ht, float("inf"))
    clean_s = hs.clone().requires_grad_(True)
    value = contrastive_loss(pool_real(garbage_s, mask), pool_real(garbage_t, mask), 0.1)
    ref = contrastive_loss(pool_real(clean_s, mask), pool_real(ht, mask), 0.1)
    torch.testing.assert_close(value, ref)
    (value + ref).backward()
    assert torch.isfinite(garbage_s.grad).all() and (garbage_s.grad[~mask] == 0).all()
    torch.testing.assert_close(garbage_s.grad[mask], clean_s.grad[mask])
    pooled = pool_real(hs, mask)
    torch.testing.assert_close(pooled[0], hs[0, :3].mean(0))
    torch.testing.assert_close(mean_pool(hs[mask], mask.nonzero()[:, 0], 3), pooled)


def _outputs(width, grad=False):
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    hidden = {i: torch.randn(3, 4, width, requires_grad=grad) for i in range(3)}
    return Outputs(torch.randn(3, 2, requires_grad=grad), hidden, {}, mask)


def test_the_objective_pools_projects_and_queues():
    pairs = [LayerPair(1, 2, 1.0), LayerPair(2, 2, 0.5)]
    weights = LossWeights(alpha=0.0, ce=0.0, contrast=1.0, contrast_temperature=0.2, contrast_queue=4)
    loss = DistillLoss(weights, pairs, {1: 8, 2: 8}, {2: 16}, False)
    assert {"queue_s1_t2", "queue_s2_t2", "queued_s1_t2"} <= set(loss.state_dict())  # saved with checkpoints
    s, t = _outputs(8, grad=True), _outputs(16)
    real = s.mask != 0
    _, terms = loss(s, t)
    first_t = pool_real(t.hidden[2], real)
    expected = contrastive_loss(loss.projections["s1_t2"](pool_real(s.hidden[1], real)), first_t, 0.2)
    torch.testing.assert_close(terms["contrast/s1_t2"], expected.detach())
    torch.testing.assert_close(terms["contrast"], terms["contrast/s1_t2"] + 0.5 * terms["contrast/s2_t2"])
    assert int(loss.queued_s1_t2) == 3
    torch.testing.assert_close(loss.queue_s1_t2[:3], first_t)
    s2, t2 = _outputs(8, grad=True), _outputs(16)
    total, terms = loss(s2, t2)  # now 3 earlier teacher states are extra negatives
    projected = loss.projections["s1_t2"](pool_real(s2.hidden[1], real))
    second = contrastive_loss(projected, pool_real(t2.hidden[2], real), 0.2, first_t)
    torch.testing.assert_close(terms["contrast/s1_t2"], second.detach())
    total.backward()  # the queue is a detached buffer: the backward never reaches it
    assert int(loss.queued_s1_t2) == 4  # full: the oldest states fall out
    assert str(loss) == "L = 1.0*InfoNCE(τ=0.2, queue 4) [λ: s1→t2=1.0, s2→t2=0.5]"


def test_the_queue_is_saved_and_restored_with_the_checkpoint(tmp_path):
    """projections.safetensors (fadkd/run/checkpoint.py) holds the queue, so a resumed run sees the same negatives."""
    weights = LossWeights(alpha=0.0, ce=0.0, contrast=1.0, contrast_queue=2)
    loss = DistillLoss(weights, [LayerPair(1, 2, 1.0)], {1: 8}, {2: 16}, False)
    loss(_outputs(8, grad=True), _outputs(16))  # 3 rows pushed into a queue of 2
    save_model(loss, str(tmp_path / "projections.safetensors"))
    fresh = DistillLoss(weights, [LayerPair(1, 2, 1.0)], {1: 8}, {2: 16}, False)
    load_model(fresh, str(tmp_path / "projections.safetensors"))
    torch.testing.assert_close(fresh.queue_s1_t2, loss.queue_s1_t2)
    assert int(fresh.queued_s1_t2) == 2
    s, t = _outputs(8, grad=True), _outputs(16)
    torch.testing.assert_close(fresh(s, t)[1]["contrast"], loss(s, t)[1]["contrast"])
