"""The pieces build_run (fadkd/run/train.py) puts together: seeds, the objective, batches, resume, the first-batch
fits."""

import math
import random
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torch.utils.data import DataLoader

from fadkd.config.schema import Config
from fadkd.data.batches import EpochSampler, make_loader
from fadkd.errors import FadkdError
from fadkd.losses.distill import DistillLoss
from fadkd.losses.mapping import describe
from fadkd.losses.projections import fit_feature_norm, fit_projections, select_channels
from fadkd.losses.spec import LossSpec, build_spec
from fadkd.models.capture import run_model
from fadkd.models.load import depth, width
from fadkd.run.checkpoint import TrainState, latest_checkpoint, load_checkpoint, safe_dir
from fadkd.run.progress import make_console
from fadkd.run.setup import Setup

console = make_console()


def seed_everything(seed: int, num_threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def batches(cfg: Config, setup: Setup, dist, local_batch: int) -> tuple[EpochSampler, DataLoader, int]:
    """The sampler (length-grouped when asked; this rank's share), the loader, and batches per epoch."""
    rows, collator = setup.train_rows, setup.collator
    lengths = None
    if cfg.train.group_by_length:
        lengths = [int(collator([row]).student["attention_mask"].sum()) for row in rows]
    sampler = EpochSampler(
        len(rows), cfg.train.seed, lengths=lengths, batch_size=cfg.train.batch_size,
        rank=dist.rank, world_size=dist.world_size,
    )  # fmt: skip
    loader = make_loader(rows, collator, local_batch, sampler)
    return sampler, loader, math.ceil(len(rows) / cfg.train.batch_size)


def find_checkpoint(cfg: Config, out_dir: Path) -> tuple[tuple[Path, dict] | None, Path]:
    """train.resume: the latest complete checkpoint (refused when written under the other strategy); else None."""
    checkpoints = safe_dir(out_dir, "checkpoints")
    if not cfg.train.resume:
        return None, checkpoints
    found = latest_checkpoint(checkpoints)
    if found is None:
        raise FadkdError(f"train.resume=true but {checkpoints} holds no complete checkpoint; start afresh")
    written = found[1].get("strategy", "ddp")  # checkpoints from before train.strategy: full copies
    wanted = "fsdp" if cfg.train.strategy == "fsdp" else "ddp"
    if written != wanted:
        how = {"fsdp": "train.strategy=fsdp (DCP shards)", "ddp": "train.strategy=ddp (full copies)"}
        raise FadkdError(
            f"{found[0]} was written by a run with {how[written]}, and this run has {how[wanted]}; the two "
            f"checkpoint formats do not convert. Resume with train.strategy={written}, or start a new run"
        )
    return found, checkpoints


def resume(found, student, loss_fn, optimizer, scheduler) -> TrainState:
    """A fresh state, or the found checkpoint's (full copies: one process or DDP)."""
    if found is None:
        return TrainState()
    state = load_checkpoint(*found, student, loss_fn, optimizer, scheduler)
    console.print(f"resumed from {found[0]} (step {state.step})")
    return state


def objective(cfg: Config, setup: Setup, device) -> tuple[LossSpec, DistillLoss]:
    """The loss spec and the loss with its projections, decided once and printed."""
    student = setup.student
    spec = build_spec(cfg, depth(student), setup.teacher_shape, setup.kd_vocab)
    loss_fn = DistillLoss(
        spec.weights,
        list(spec.pairs),
        student_widths={p.student: width(student) for p in spec.pairs},
        teacher_widths={p.teacher: setup.teacher_shape["width"] for p in spec.pairs},
        is_regression=setup.task.is_regression,
        shared_projection=cfg.loss.shared_projection,
        choice=spec.choice,
    ).to(device)
    console.print(f"[bold]{escape(str(loss_fn))}")  # "[balance=...]" is not markup
    if schedule := spec.describe_schedule():
        console.print(schedule)
    if spec.pairs:
        console.print("layer mapping (hidden_states[0] = embeddings):\n" + describe(list(spec.pairs)))
    return spec, loss_fn


def fit_on_first_batch(cfg: Config, setup: Setup, spec: LossSpec, loss_fn, teacher, device) -> None:
    """loss.feature_norm=standardize and loss.projection_init=lstsq: fitted on the first batch, before step 1
    (projection_init=channels: the pruned student's channel selection, no batch needed)."""
    if cfg.loss.projection_init == "channels":
        start_as_channels(setup.student, loss_fn)
    standardize = cfg.loss.feature_norm == "standardize" and spec.features
    lstsq = cfg.loss.projection_init == "lstsq" and loss_fn.projections
    if not (standardize or lstsq):
        return
    first = setup.collator(setup.train_rows[: cfg.train.batch_size]).to(device)
    with torch.no_grad():
        t_first = teacher.outputs(first)
        if standardize:
            spread = fit_feature_norm(loss_fn, t_first)
            console.print("teacher states standardised per dimension (max/median std): " + fmt(spread, 1))
        if lstsq:
            r2 = fit_projections(loss_fn, run_model(setup.student, first.student, spec.student_layers), t_first)
            console.print("projections fitted by least squares on the first batch, R²: " + fmt(r2, 3))


def start_as_channels(student, loss_fn) -> None:
    """Each projection starts as the selection of the teacher channels the pruned student kept."""
    channels = (getattr(student.config, "fadkd_pruned", None) or {}).get("hidden_channels")
    if channels is None:
        raise FadkdError(
            "loss.projection_init=channels starts each projection as the teacher channels a pruned student kept, but "
            "this student was not pruned from the teacher; use student=pruned (or a folder it wrote), or "
            "loss.projection_init=random or lstsq"
        )
    n = select_channels(loss_fn, channels)
    console.print(f"projections start as the selection of the {len(channels)} kept teacher channels ({n} set)")


def fmt(values: dict | None, digits: int = 4) -> str:
    """Metrics or terms on one line: k=v  k=v."""
    return "  ".join(f"{k}={v:.{digits}f}" for k, v in (values or {}).items())
