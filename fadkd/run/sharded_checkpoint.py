"""Checkpoints of a sharded run (train.strategy=fsdp): torch.distributed.checkpoint (DCP), atomic like
fadkd/run/checkpoint.py's.

checkpoints/step-00000040/ holds
  sharded/        DCP: every rank writes its shards of the student, the projections and AdamW's state
                  (__<rank>_0.distcp), rank 0 the .metadata that maps them to global tensors
  scheduler.pt    the learning-rate schedule's state (rank 0)
  rng.safetensors rank 0's torch generator states
  meta.json       step, data position, best metric, Python/NumPy RNG, strategy=fsdp, the number of
                  processes, and the sha256 of every file above
Every rank writes into one hidden temporary folder; once all have written, rank 0 fsyncs, writes
meta.json last and renames the folder into place. DCP loads into whatever sharding the resuming run
has, so a run may resume on another number of processes (it says so), one process included: there
train.strategy=fsdp shards nothing but still writes and reads this format.
"""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from fadkd.run.checkpoint import TrainState, _fsync, _rng_state, _set_rng_state, _sha256, publish
from fadkd.run.distributed import Dist, barrier

STRATEGY = "fsdp"


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def save_sharded(folder: Path, state: TrainState, forward, optimizer, scheduler, keep: int, info: Dist) -> Path:
    """Write checkpoints/step-N from every rank's shards (every rank calls it); drop all but the newest `keep`."""
    final = folder / f"step-{state.step:08d}"
    tmp = folder / f".step-{state.step:08d}.tmp-sharded"  # one name on every rank
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(info)
    model_state, optim_state = get_state_dict(forward, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp / "sharded"))
    barrier(info)
    if info.is_main:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng_plain, rng_tensors = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        names = _files(tmp)
        for name in names:
            _fsync(tmp / name)
        meta = {
            "state": asdict(state), "rng": rng_plain, "strategy": STRATEGY, "world_size": info.world_size,
            "sha256": {n: _sha256(tmp / n) for n in names},
        }  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta))
        _fsync(tmp / "meta.json")
        publish(tmp, final, keep)
    barrier(info)
    return final


def load_sharded(path: Path, meta: dict, forward, optimizer, scheduler, info: Dist, log) -> TrainState:
    """Every rank reads its shards of a verified checkpoint (resharded when the number of processes changed)."""
    model_state, optim_state = get_state_dict(forward, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path / "sharded"))
    set_state_dict(forward, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    _set_rng_state(meta["rng"], load_file(str(path / "rng.safetensors")))
    saved = meta.get("world_size", info.world_size)
    if saved != info.world_size:
        log(f"resharded: {path.name} was written by {saved} processes and is read by {info.world_size}")
    return TrainState(**meta["state"])
