"""loss.feature_schedule: β, γ, δ as a warm start that decays to 0 in the training loop."""

import json

import pytest

from fadkd.config.schema import Config, LossConfig, ModelConfig, TaskConfig, TrainConfig
from fadkd.run.train import train


@pytest.mark.parametrize("schedule, scales", [("linear", [1.0, 0.5, 0.0, 0.0]), ("constant", None)])
def test_loop_applies_the_schedule(tmp_path, schedule, scales):
    cfg = Config(
        teacher=ModelConfig(num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128),
        loss=LossConfig(beta=0.5, gamma=0.5, delta=0.5, feature_schedule=schedule, feature_until=0.5),
        task=TaskConfig(data_dir="sample", max_train_samples=32, max_eval_samples=8),
        train=TrainConfig(max_steps=4, batch_size=8, log_every=1, save_student=False),
    )
    train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "steps.jsonl").open()]
    assert [r.get("feature_scale") for r in rows] == (scales or [None] * 4)
    for r in rows:  # the logged total is the scaled sum of the logged terms
        scale = r.get("feature_scale", 1.0)
        features = 0.5 * (r["cos"] + r["mse"] + r["attn"])
        assert r["loss"] == pytest.approx(r["kd"] + r["ce"] + scale * features, rel=1e-5)
