"""bf16 autocast, length-grouped batching, fused AdamW: same training, less work."""

import json
import math

import torch

from fadkd.config.schema import Config, TaskConfig, TrainConfig
from fadkd.data.batches import EpochSampler
from fadkd.run.step import build_optimizer
from fadkd.run.train import train


def test_length_grouping_keeps_every_row_once_and_sorts_within_chunks():
    lengths = [(i * 37) % 23 + 1 for i in range(1000)]
    sampler = EpochSampler(1000, seed=3, lengths=lengths, batch_size=4)
    sampler.set_epoch(1)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    chunk = order[:200]  # 50 batches of 4
    assert [lengths[i] for i in chunk] == sorted((lengths[i] for i in chunk), reverse=True)
    sampler.set_epoch(2)
    assert list(sampler) != order  # still shuffled between epochs


def test_bf16_autocast_trains_with_finite_losses(tmp_path):
    cfg = Config(
        task=TaskConfig(data_dir="sample", max_train_samples=32, max_eval_samples=8),
        train=TrainConfig(max_steps=3, batch_size=8, log_every=1, precision="bf16", group_by_length=True),
    )
    assert train(cfg, tmp_path)["steps"] == 3
    for line in (tmp_path / "steps.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert all(math.isfinite(row[k]) for k in ("loss", "kd", "cos", "mse", "attn", "ce"))


def _adamw_run(fused: bool) -> tuple[list, list, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    head = torch.nn.Linear(3, 3)
    start = [p.detach().clone() for p in [*model.parameters(), *head.parameters()]]
    groups = [{"params": list(model.parameters())}, {"params": list(head.parameters()), "lr": 1e-2}]
    optimizer = build_optimizer(groups, 1e-3, 0.01, fused, torch.device("cpu"))
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(5):
        torch.nn.functional.cross_entropy(head(model(x)), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return start, [p.detach().clone() for p in [*model.parameters(), *head.parameters()]], optimizer


def test_fused_adamw_makes_the_same_update_as_torchs_default():
    start, fused, opt_fused = _adamw_run(True)
    _, plain, opt_plain = _adamw_run(False)
    assert opt_fused.param_groups[0]["fused"] and not opt_plain.param_groups[0]["fused"]
    assert opt_fused.param_groups[1]["lr"] == 1e-2 and opt_fused.param_groups[0]["weight_decay"] == 0.01
    for before, a, b in zip(start, fused, plain):
        assert (a - before).abs().max() > 1e-4  # five steps moved every tensor
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_adamw_is_only_asked_for_devices_with_a_kernel():
    groups = [{"params": [torch.nn.Parameter(torch.ones(2))]}]
    assert not build_optimizer(groups, 1e-3, 0.0, True, torch.device("meta")).param_groups[0]["fused"]
