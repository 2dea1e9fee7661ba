"""A disk too small for the cache, the checkpoint or the run: one message, no half file, nothing saved lost.

Each test mounts a small tmpfs (root only); where mounting is not permitted the test is skipped
and says why.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from fadkd.cli import main
from fadkd.run.checkpoint import latest_checkpoint

FAST = ["task.max_train_samples=16", "task.max_eval_samples=8", "train.batch_size=8", "train.num_threads=1"]


@pytest.fixture
def small_disk(tmp_path):
    """A function mounting a tmpfs of `size` (e.g. "1m") at tmp_path/disk; unmounted after the test."""
    mounted = []

    def mount(size: str) -> Path:
        disk = tmp_path / "disk"
        disk.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:  # a memory map the caught
            subprocess.run(["umount", "-l", str(disk)], check=False)  # exception's frames still hold: detach


def _fails(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old" in p.name]


def test_cache_larger_than_the_free_space_is_refused(small_disk, tmp_path, capsys):
    disk = small_disk("1m")
    args = ["train", *FAST, "task.max_train_samples=64", "train.max_steps=1", "cache.enabled=true"]
    err = _fails([*args, f"cache.dir={disk}", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert f"the teacher cache needs about 1.6 MiB but {disk} has 1.0 MiB free" in err
    assert list(disk.iterdir()) == []  # no .tmp folder


def test_cache_on_a_disk_that_fills_leaves_no_half_file(small_disk, tmp_path, capsys, monkeypatch):
    disk = small_disk("256k")
    monkeypatch.setattr("fadkd.teacher.cache.check_free_space", lambda folder, size: None)  # filled by another writer
    args = ["train", *FAST, "task.max_train_samples=64", "train.max_steps=1", "cache.enabled=true", f"cache.dir={disk}"]
    err = _fails([*args, f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert f"the teacher cache could not be written to {disk}: no space left on the device" in err
    assert list(disk.iterdir()) == []


def test_run_folder_on_a_full_disk_is_refused_before_hydra_writes(small_disk, capsys):
    disk = small_disk("1m")
    with pytest.raises(OSError), open(disk / "fill", "wb") as f:
        f.write(b"\0" * (2 << 20))  # fills it
    err = _fails(["train", *FAST, f"hydra.run.dir={disk / 'run'}"], capsys)
    assert "no space left on the device" in err and "hydra.run.dir=" in err


@pytest.mark.slow
def test_checkpoint_that_does_not_fit_keeps_the_earlier_one(small_disk):
    """2.6 MB: the step-1 checkpoint (2 MB) fits, the best student (0.7 MB) beside it does not."""
    disk = small_disk("2600k")
    args = [*FAST, "train.max_steps=2", "train.checkpoint_every=1", f"hydra.run.dir={disk / 'run'}"]
    proc = subprocess.run([sys.executable, "-m", "fadkd", "train", *args], capture_output=True, text=True, cwd=ROOT)
    err = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "Traceback" not in err
    assert "could not be saved" in err and "train.resume=true" in err
    found = latest_checkpoint(disk / "run" / "checkpoints")
    assert found is not None and found[1]["state"]["step"] == 1  # intact: its checksums match
    assert _leftovers(disk / "run") == []


def test_checkpoint_write_failure_leaves_no_half_folder(tmp_path, monkeypatch):
    import errno

    import torch

    from fadkd.errors import FadkdError
    from fadkd.run.checkpoint import TrainState, save_checkpoint

    model, loss_fn = torch.nn.Linear(2, 2), torch.nn.Linear(1, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, TrainState(step=1), model, loss_fn, optimizer, scheduler, keep=2)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fadkd.run.checkpoint.save_file", full)
    with pytest.raises(FadkdError, match="nothing half-written is kept and the earlier checkpoints"):
        save_checkpoint(folder, TrainState(step=2), model, loss_fn, optimizer, scheduler, keep=2)
    assert [p.name for p in folder.iterdir()] == ["step-00000001"]
    assert latest_checkpoint(folder)[1]["state"]["step"] == 1
