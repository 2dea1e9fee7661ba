"""A teacher cache cut short, changed, or interrupted while built: checked on open, rebuilt, no .tmp left."""

import json

import pytest

from fadkd.config.schema import CacheConfig, Config, TaskConfig, TrainConfig
from fadkd.run.train import train
from fadkd.teacher.cache import damage


def _cfg(tmp_path) -> Config:
    return Config(
        task=TaskConfig(data_dir="sample", max_train_samples=16, max_eval_samples=8),
        train=TrainConfig(max_steps=1, batch_size=8, num_threads=1),
        cache=CacheConfig(enabled=True, dir=str(tmp_path / "cache")),
    )


def _folder(tmp_path):
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    return folder


@pytest.mark.parametrize("harm", ["truncate", "flip"])
def test_damaged_cache_is_named_and_rebuilt(tmp_path, capsys, harm):
    train(_cfg(tmp_path), tmp_path / "a")
    folder = _folder(tmp_path)
    victim = sorted(folder.glob("hidden_*.bin"))[0]
    data = victim.read_bytes()
    victim.write_bytes(b"" if harm == "truncate" else bytes([data[0] ^ 1]) + data[1:])
    expected = f"{victim.name} is 0 bytes, not {len(data)}" if harm == "truncate" else "does not match its checksum"
    assert expected in damage(folder, json.loads((folder / "meta.json").read_text()))
    capsys.readouterr()
    train(_cfg(tmp_path), tmp_path / "b")
    out = capsys.readouterr().out
    assert f"teacher cache {folder} is damaged ({victim.name}" in out and "building it again" in out
    assert damage(folder, json.loads((folder / "meta.json").read_text())) is None


def test_interrupted_cache_build_leaves_no_tmp_folder(tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fadkd.teacher.cache.run_model", stop)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path), tmp_path / "a")
    assert list((tmp_path / "cache").iterdir()) == []
