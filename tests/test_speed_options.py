"""bf16 autocast and length-grouped batching: same training, less work."""

import json
import math

from fadkd.config import Config, TaskConfig, TrainConfig
from fadkd.data import EpochSampler
from fadkd.train import train


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
