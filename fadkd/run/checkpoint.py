"""Checkpoints that survive a kill at any instant, and exact resume.

A checkpoint is a folder checkpoints/step-00000040/ holding
  student.safetensors, projections.safetensors   weights (safetensors: no pickle)
  optimizer.pt                                    AdamW + scheduler state, loaded with weights_only=True
  rng.safetensors                                 torch (and CUDA) generator states
  meta.json                                       step, data position, best metric, Python/NumPy RNG,
                                                  and the sha256 of every file above
It is written into a hidden temporary folder, every file fsync'ed, meta.json last, then renamed
into place: a folder named step-* is complete by construction, and a file damaged later is caught
by its checksum, in which case the previous checkpoint is used.
"""

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from fadkd.errors import FadkdError

FILES = ("student.safetensors", "projections.safetensors", "optimizer.pt", "rng.safetensors")


@dataclass
class TrainState:
    """Where the loop is: enough, with the weights and RNG, to continue bit for bit."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained on
    best: dict | None = None  # best dev metrics so far
    best_step: int = 0
    skipped_steps: int = 0  # steps skipped for non-finite values
    extra: dict = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {
        "python": [version, list(mt), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    return plain, tensors


def _set_rng_state(plain: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, mt, gauss = plain["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def safe_dir(root: Path, name: str) -> Path:
    """root/name, refusing a symlink there (writes must not land outside the run folder)."""
    path = root / name
    if path.is_symlink():
        raise FadkdError(f"{path} is a symbolic link; fadkd writes only real folders inside the run folder")
    return path


def save_checkpoint(folder: Path, state: TrainState, student, loss_fn, optimizer, scheduler, keep: int) -> Path:
    """Write checkpoints/step-N atomically, then drop all but the newest `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{state.step:08d}"
    tmp = folder / f".step-{state.step:08d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_model(student, str(tmp / "student.safetensors"))
        save_model(loss_fn, str(tmp / "projections.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        rng_plain, rng_tensors = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        for name in FILES:
            _fsync(tmp / name)
        sums = {n: _sha256(tmp / n) for n in FILES}
        meta = {"state": asdict(state), "rng": rng_plain, "strategy": "ddp", "sha256": sums}
        (tmp / "meta.json").write_text(json.dumps(meta))
        _fsync(tmp / "meta.json")
    except BaseException as err:  # a full disk (OSError, SafetensorError, torch's RuntimeError) or a signal
        shutil.rmtree(tmp, ignore_errors=True)  # no half checkpoint; the earlier ones stay
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise FadkdError(
            f"checkpoint {final} could not be written ({str(err).splitlines()[0] if str(err) else type(err).__name__});"
            f" nothing half-written is kept and the earlier checkpoints in {folder} are intact: free some space on "
            "that disk (or write the run elsewhere with hydra.run.dir=...), then continue with train.resume=true"
        ) from None
    return publish(tmp, final, keep)


def publish(tmp: Path, final: Path, keep: int) -> Path:
    """Rename the finished tmp folder to final in one step, then drop all but the newest `keep` checkpoints."""
    if final.exists():  # a re-run of the same step after resume
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(final.parent)
    for old in sorted(final.parent.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _verify(path: Path) -> dict | None:
    """meta.json of a checkpoint whose files all match their checksums, else None."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        ok = all(_sha256(path / name) == digest for name, digest in meta["sha256"].items())
    except (OSError, ValueError, KeyError):
        return None
    return meta if ok else None


def latest_checkpoint(folder: Path) -> tuple[Path, dict] | None:
    """The newest complete, intact checkpoint; damaged ones are reported and skipped."""
    for path in sorted(folder.glob("step-*"), reverse=True):
        meta = _verify(path)
        if meta is not None:
            return path, meta
        print(f"checkpoint {path} is incomplete or damaged (checksum mismatch); trying the previous one")
    return None


def load_checkpoint(path: Path, meta: dict, student, loss_fn, optimizer, scheduler) -> TrainState:
    """Restore weights, optimizer, scheduler and every RNG from a verified checkpoint."""
    try:
        load_model(student, str(path / "student.safetensors"))
        load_model(loss_fn, str(path / "projections.safetensors"))
        opt = torch.load(path / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
    except (RuntimeError, ValueError) as err:  # "size mismatch" per tensor, or other parameter groups
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise FadkdError(
            f"{path} was written for other model or loss settings ({first[:200]}); resume with the settings "
            "in the run's config.yaml, or start a new run"
        ) from None
    scheduler.load_state_dict(opt["scheduler"])
    _set_rng_state(meta["rng"], load_file(str(path / "rng.safetensors")))
    return TrainState(**meta["state"])
