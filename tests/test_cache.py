"""The teacher cache: same losses as the live teacher, shared across runs, refused when wrong."""

import json

import pytest

from fadkd.config.schema import CacheConfig, Config, LossConfig, TaskConfig, TrainConfig
from fadkd.run.train import train
from fadkd.teacher.cache import CacheError


def _cfg(tmp_path, enabled=True, **cache) -> Config:
    return Config(
        task=TaskConfig(data_dir="sample", max_train_samples=48, max_eval_samples=16),
        train=TrainConfig(max_steps=6, batch_size=8, log_every=1),
        cache=CacheConfig(enabled=enabled, dir=str(tmp_path / "cache"), **cache),
    )


def _losses(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def test_cached_training_matches_live_teacher_within_fp16(tmp_path):
    live = train(_cfg(tmp_path, enabled=False), tmp_path / "live")
    cached = train(_cfg(tmp_path), tmp_path / "cached")
    assert cached["teacher"] == live["teacher"]
    for a, b in zip(_losses(tmp_path / "live"), _losses(tmp_path / "cached"), strict=True):
        for term in ("loss", "kd", "cos", "mse", "attn", "ce"):
            assert b[term] == pytest.approx(a[term], rel=2e-3, abs=1e-5), (term, a["step"])


def test_runs_that_differ_in_weights_share_one_cache(tmp_path, capsys):
    train(_cfg(tmp_path), tmp_path / "a")
    cfg = _cfg(tmp_path)
    cfg.loss = LossConfig(beta=0.0, delta=0.5)
    capsys.readouterr()
    metrics = train(cfg, tmp_path / "b")
    assert "teacher cache: reading" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert metrics["params"]["teacher"] > metrics["params"]["student"]  # recorded at build time


def test_explicit_cache_built_for_something_else_is_refused(tmp_path):
    train(_cfg(tmp_path, path=str(tmp_path / "mine")), tmp_path / "a")
    cfg = _cfg(tmp_path, path=str(tmp_path / "mine"))
    cfg.task.max_length = 64
    with pytest.raises(CacheError, match="max_length"):
        train(cfg, tmp_path / "b")


def test_cache_over_its_size_limit_is_refused_before_writing(tmp_path):
    with pytest.raises(CacheError, match=r"over cache.max_gb=1e-06"):
        train(_cfg(tmp_path, max_gb=1e-6), tmp_path / "a")
    assert not any((tmp_path / "cache").glob("*/meta.json"))
