"""One optimisation step (shared by the training loop and the speed benchmark), its optimizer and
learning-rate schedules."""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from fadkd.losses.reduce import global_counts
from fadkd.models.capture import Layers, run_model
from fadkd.run.guards import nonfinite_gradient, nonfinite_term
from fadkd.teacher.base import Teacher


class StudentLoss(torch.nn.Module):
    """The student's forward and the loss as one module: everything a step trains, in one place.

    With several processes this is what DistributedDataParallel wraps, so the gradients of the
    student and of the loss's learned projections are averaged together (fadkd/run/distributed.py).
    """

    def __init__(self, student: torch.nn.Module, loss_fn: torch.nn.Module, layers: Layers):
        super().__init__()
        self.student, self.loss_fn, self.layers = student, loss_fn, layers

    def forward(self, inputs: dict, t_out, labels: torch.Tensor, scales: tuple[float, float] = (1.0, 1.0)):
        return self.loss_fn(run_model(self.student, inputs, self.layers), t_out, labels, *scales)


def staged_lr(optimizer, warmup_ratio: float, stage1_steps: int, stage2_steps: int) -> LambdaLR:
    """Two linear schedules back to back (TinyBERT trains its stages as two runs): each stage warms up over
    warmup_ratio of its own steps, then decays linearly to 0 at its end."""

    def factor(step: int) -> float:
        start, length = (0, stage1_steps) if step < stage1_steps else (stage1_steps, stage2_steps)
        at, warmup = step - start, int(warmup_ratio * length)
        if at < warmup:
            return at / max(1, warmup)
        return max(0.0, (length - at) / max(1, length - warmup))

    return LambdaLR(optimizer, factor)


FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel for fp32 parameters


def build_optimizer(groups: list[dict], lr: float, weight_decay: float, fused: bool, device: torch.device):
    """AdamW over `groups`; fused (one kernel over every tensor) where torch has one for `device`.

    The same update as torch's default AdamW (tests/test_speed_options.py checks it) at a
    fraction of its time on CPU: ~9 ms instead of ~90 ms a step for a 23M-parameter student on
    2 cores, where the default implementation runs a handful of kernels per parameter tensor.
    """
    fused = fused and device.type in FUSED_DEVICES
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))


@dataclass
class StepParts:
    """What a step touches. `teacher` is live or cached (fadkd/teacher/base.py), None without teacher terms."""

    student: torch.nn.Module
    teacher: Teacher | None
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    named_params: list[tuple[str, torch.nn.Parameter]]
    student_layers: Layers
    grad_clip: float = 1.0  # 0 = no clipping (and no gradient-norm check; the loss terms are still checked)
    precision: str = "fp32"  # fp32 | bf16 (autocast; the loss terms compute in fp32)
    forward: torch.nn.Module | None = None  # StudentLoss (DDP-wrapped with several processes); None: built here
    average: Callable | None = None  # several processes: (loss, terms) -> their means over ranks
    counts: Callable | None = None  # several processes: a term's count -> over every rank (losses/reduce.py)

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = StudentLoss(self.student, self.loss_fn, self.student_layers)

    def autocast(self, device: torch.device):
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()


def train_step(parts: StepParts, batch, device: torch.device, scales: tuple[float, float] = (1.0, 1.0)):
    """Forward both models, loss, backward, clip, and update unless a value is non-finite.

    `scales`: this step's factors on (β, γ, δ) and (α, ce), from LossSpec.scales (loss.feature_schedule).

    Returns (loss, terms, grad_norm, bad): `bad` names the non-finite term or gradient (the
    update was then not applied), else None.
    """
    with parts.autocast(device), global_counts(parts.counts):  # means over the global batch's real tokens
        t_out = parts.teacher.outputs(batch) if parts.teacher is not None else None
        loss, terms = parts.forward(batch.student, t_out, batch.labels, scales)
    loss.backward()
    if parts.average is not None:  # every rank then logs, checks and skips alike
        loss, terms = parts.average(loss, terms)
    grad_norm = None  # without clipping the norm is not computed (it costs a pass over every gradient)
    if parts.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in parts.named_params], parts.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP's sharded gradients: the norm over every rank's shards
            grad_norm = grad_norm.full_tensor()
    bad = nonfinite_term(terms)
    if bad is None and grad_norm is not None and not torch.isfinite(grad_norm):
        bad = f"gradient of {nonfinite_gradient(parts.named_params)}"
    if bad is None:
        parts.optimizer.step()
        parts.scheduler.step()
    # Freed now, not before the next backward: the gradients then never live through a forward.
    parts.optimizer.zero_grad(set_to_none=True)
    return loss, terms, grad_norm, bad
