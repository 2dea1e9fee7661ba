"""Means over the global batch (fadkd/losses/reduce.py): N shards' terms average to one process's."""

import torch

from fadkd.losses.kd import forward_kl
from fadkd.losses.reduce import global_counts, mean_over
from fadkd.losses.terms import attention_loss, cosine_loss, task_loss


def _shards(world: int = 2):
    """A global batch of 4 rows whose shards hold different numbers of real tokens (6 and 2 / 1 and 3 ...)."""
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    s_h = torch.randn(4, 4, 8, generator=g, requires_grad=True)
    t_h = torch.randn(4, 4, 8, generator=g)
    s_a = torch.softmax(torch.randn(4, 2, 4, 4, generator=g), -1).requires_grad_()
    t_a = torch.softmax(torch.randn(4, 2, 4, 4, generator=g), -1)
    s_z = torch.randn(4, 4, 11, generator=g, requires_grad=True)
    t_z = torch.randn(4, 4, 11, generator=g)
    labels = torch.randint(0, 11, (4, 4), generator=g).masked_fill(mask == 0, -100)
    return mask, s_h, t_h, s_a, t_a, s_z, t_z, labels


def _terms(mask, s_h, t_h, s_a, t_a, s_z, t_z, labels):
    return torch.stack([
        cosine_loss(s_h, t_h, mask),
        attention_loss(s_a, t_a, mask),
        forward_kl(s_z, t_z, 2.0, mask),
        task_loss(s_z, labels, False),
    ])  # fmt: skip


def test_outside_a_global_block_the_mean_is_local():
    assert mean_over(torch.tensor(6.0), 3).item() == 2.0
    assert mean_over(torch.tensor(0.0), 0).item() == 0.0  # no real token: 0, not NaN


def test_shards_with_unequal_tokens_average_to_the_global_batch_value_and_gradient():
    tensors = _shards()
    one = _terms(*tensors)
    grads_one = torch.autograd.grad(one.sum(), [tensors[1], tensors[3], tensors[5]])
    world, halves = 2, [tuple(t[i * 2 : (i + 1) * 2] for t in tensors) for i in range(2)]

    # The counts each rank would all-reduce: each term's calls are in the same order on every rank.
    counts: list[list[torch.Tensor]] = [[], []]
    for rank, half in enumerate(halves):
        with global_counts(lambda c, rank=rank: (counts[rank].append(c) or c, world)):
            _terms(*half)
    totals = [a + b for a, b in zip(*counts)]
    per_rank, grads = [], []
    for half in halves:
        calls = iter(totals)
        leaves = [t.detach().requires_grad_() for t in (half[1], half[3], half[5])]
        args = list(half)
        args[1], args[3], args[5] = leaves
        with global_counts(lambda c, calls=calls: (next(calls), world)):
            values = _terms(*args)
        per_rank.append(values.detach())
        grads.append(torch.autograd.grad(values.sum(), leaves))
    assert torch.allclose((per_rank[0] + per_rank[1]) / world, one, rtol=1e-5, atol=1e-7)
    # plain per-rank means would not agree: the shards hold 6 and 3 real tokens
    local = (_terms(*halves[0]) + _terms(*halves[1])) / 2
    assert not torch.allclose(local, one, rtol=1e-3)
    for full, a, b in zip(grads_one, *grads):  # DDP / FSDP average the ranks' gradients
        assert torch.allclose(torch.cat([a, b]) / world, full, rtol=1e-5, atol=1e-7)
