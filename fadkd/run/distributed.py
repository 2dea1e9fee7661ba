"""Several processes, one run under `torchrun`: DistributedDataParallel (train.strategy=ddp) and what both
strategies share.

    torchrun --standalone --nproc_per_node=N -m fadkd train ...

torchrun starts N copies of fadkd and sets RANK / WORLD_SIZE / LOCAL_RANK; `setup` joins them
into one process group (gloo on CPU, NCCL on GPUs). What each piece does across processes:

- data: every rank draws the same global order (EpochSampler, seeded per epoch) and takes
  rows rank, rank + N, rank + 2N, ... of it (`EpochSampler(rank=, world_size=)`), so a step's
  N shards together are exactly the global batch one process would take;
- train.batch_size is the global batch: each rank gets batch_size / N rows (an error unless it
  divides), and the step count, hence the learning-rate schedule, is the single-process one;
- gradients: the student and the loss's learned projections are wrapped together
  (step.StudentLoss) in DistributedDataParallel, so every trained parameter's gradient is
  averaged over ranks in backward; every term divides its rank's sum by the real tokens / rows of
  the whole global batch (`count_reduce`, fadkd/losses/reduce.py), so the averaged loss and
  gradients are one process's exactly; the loss and its terms are averaged (`average_terms`),
  so every rank logs, checks for NaN and skips or stops at the same step;
- rank 0 alone writes the run folder, logs, evaluates and checkpoints (`on_ranks`: every rank calls the
  evaluation, rank 0 runs it, its metrics are every rank's); the teacher's set-up follows the same rule
  (fadkd/teacher/setup.py: rank 0 builds the teacher cache while the others wait, then they read it).

train.strategy=fsdp shards the student, projections, optimizer state and teacher instead of copying
them (fadkd/run/sharding.py, fadkd/run/strategy.py); then every rank runs each forward (evaluations, the
teacher cache's build) and writes its checkpoint shards.

With one process (no torchrun) every helper here is a no-op.
"""

import atexit
import gc
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from fadkd.errors import FadkdError

TIMEOUT = timedelta(minutes=30)  # a rank waiting longer than this for the others fails (e.g. a long cache build)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """train.device: auto (CUDA when present, else CPU), or a device this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FadkdError(f"train.device={name} but no CUDA GPU is available here; use train.device=cpu (or auto)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise FadkdError(f"train.device={name} but this machine has {torch.cuda.device_count()} GPU(s), cuda:0 first")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FadkdError("train.device=mps but MPS is not available here; use train.device=cpu (or auto)")
    return torch.device(name)


def launched() -> Dist:
    """The ranks torchrun assigned this process (rank 0 of 1 without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group (once per process); returns this rank and its device (cuda:LOCAL_RANK)."""
    info = launched()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
    return info, device


def teardown(info: Dist) -> None:
    """Leave the process group together. Call it once the DDP module is dropped: DDP's hooks hold it
    in reference cycles, and a process group freed later by the garbage collector, after another
    rank has exited, can block in its destructor."""
    if info.enabled and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def local_batch_size(global_batch: int, info: Dist) -> int:
    """Rows per rank for a global batch of `global_batch` rows."""
    if global_batch % info.world_size:
        raise FadkdError(
            f"train.batch_size={global_batch} is the global batch, split over {info.world_size} processes, "
            f"but {info.world_size} does not divide it; use a multiple of {info.world_size} (e.g. "
            f"train.batch_size={global_batch + info.world_size - global_batch % info.world_size}) or another "
            "--nproc_per_node"
        )
    return global_batch // info.world_size


def wrap(module: torch.nn.Module, info: Dist) -> torch.nn.Module:
    """DistributedDataParallel around `module` (gradients averaged in backward), or `module` itself."""
    if not info.enabled:
        return module
    # device_ids=None: inputs already sit on this rank's device. Buffers are synced once, at init, not
    # before every forward: fadkd's models have no running statistics, only constant buffers (position ids).
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=None, forward_sync_buffers=False)


def average_terms(info: Dist) -> Callable | None:
    """A function (loss, terms) -> their means over ranks, in one all-reduce; None with one process."""
    if not info.enabled:
        return None

    def average(loss: torch.Tensor, terms: dict[str, torch.Tensor]):
        values = torch.stack([loss.detach().float(), *(v.detach().float().reshape(()) for v in terms.values())])
        dist.all_reduce(values)
        values /= info.world_size
        return values[0], dict(zip(terms, values[1:]))

    return average


def count_reduce(info: Dist) -> Callable | None:
    """The loss terms' counts summed over ranks (fadkd/losses/reduce.py); None with one process."""
    if not info.enabled:
        return None

    def reduce(count: torch.Tensor) -> tuple[torch.Tensor, int]:
        total = count.reshape(-1).clone()  # any shape: a count [], or gradnorm's squared norms [K]
        dist.all_reduce(total)
        return total.reshape(count.shape), info.world_size

    return reduce


def any_rank(flag: bool, info: Dist) -> bool:
    """True on every rank when `flag` is true on any (e.g. a signal reached only some ranks)."""
    if not info.enabled:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast(obj, info: Dist):
    """Rank 0's `obj` on every rank (picklable objects: paths, metric dicts)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def on_ranks(work: Callable, info: Dist, sharded: bool):
    """work() on the ranks its forwards need, rank 0's result on every rank; every rank calls it.

    A sharded model's forward is a collective: under train.strategy=fsdp every rank runs `work` (the same
    rows; the results agree). Unsharded, rank 0 runs it alone and the others wait for its result.
    """
    result = work() if info.is_main or sharded else None
    return broadcast(result, info)


def hydra_overrides_for_workers(args: list[str]) -> list[str]:
    """Overrides that keep ranks > 0 out of the run folder under torchrun.

    Hydra would give every rank its own `outputs/<date>/<time>_...` folder (the clock may tick
    between ranks) with its .hydra/ record and log; rank 0's folder is the run's (train() shares its
    path with the others), so the others write Hydra's files nowhere.
    """
    info = launched()
    if not info.enabled:
        return args
    if any(a in ("-m", "--multirun") or a.startswith("--multirun") for a in args):
        raise FadkdError(
            "fadkd train -m inside torchrun is not supported: launch one torchrun per run, or run a sweep "
            "of single-process runs (hydra/launcher=joblib or submitit_slurm)"
        )
    if info.is_main:
        return args
    scratch = tempfile.mkdtemp(prefix=f"fadkd-rank{info.rank}-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return [
        *(a for a in args if not a.startswith("hydra.run.dir=")),
        f"hydra.run.dir={scratch}",
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
