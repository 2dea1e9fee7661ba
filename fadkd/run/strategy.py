"""How the run's modules spread over torchrun's processes (train.strategy): DDP copies or FSDP2 shards.

`check_strategy` says before any work what the run will do (one process: nothing to spread;
bf16 shards on a CPU without bf16 instructions, and loss.balance=gradnorm with shards: refused);
`distribute` wraps StudentLoss in DistributedDataParallel, or shards it (fadkd/run/sharding.py; the teacher's
set-up shards the teacher);
`save_student` writes the student as one ordinary Hugging Face folder either way (a sharded
student is gathered on rank 0 first, with every rank taking part).
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from fadkd.errors import FadkdError
from fadkd.run import distributed, sharding
from fadkd.run.checkpoint import safe_dir
from fadkd.run.folder import save_student as save_plain_student


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_strategy(cfg, info: distributed.Dist, device: torch.device, log) -> bool:
    """Whether this run shards (train.strategy=fsdp under torchrun); a note or an error for what cannot be."""
    fsdp = cfg.train.strategy == "fsdp"
    if fsdp and not info.enabled:
        log(
            "note: train.strategy=fsdp in one process (no torchrun): nothing is sharded, the run trains as "
            "without it; launch it with torchrun --nproc_per_node=N to shard"
        )
        return False
    if fsdp and cfg.train.precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise FadkdError(
            "train.strategy=fsdp with train.precision=bf16 keeps the gathered parameters in bf16, but this CPU has "
            "no bf16 instructions (AVX512-BF16 / AMX): every matmul would be emulated. Use train.precision=fp32 "
            "here, or a GPU / a CPU with bf16 support"
        )
    if fsdp and cfg.loss.balance == "gradnorm":
        raise FadkdError(
            "loss.balance=gradnorm takes a backward of its own per term down to the shared student layer, which "
            "train.strategy=fsdp does not support (FSDP2 gathers and frees each block's parameters around one "
            "backward a step; a 2-process run gave other factors than one process). Use train.strategy=ddp, or "
            "loss.balance=magnitude with fsdp"
        )
    return fsdp


def distribute(forward: torch.nn.Module, info: distributed.Dist, mesh, precision: str) -> torch.nn.Module:
    """StudentLoss as a step runs it: itself (one process), DDP-wrapped, or sharded on `mesh` (fsdp).

    The live teacher is sharded in its own set-up (fadkd/teacher/setup.py), before its first forward.
    """
    if mesh is None:
        return distributed.wrap(forward, info)
    sharding.shard_student(forward, forward.student, forward.loss_fn, mesh, precision)
    return forward


def save_student(forward, student, tokenizer, loss_fn, out_dir: Path, info: distributed.Dist, sharded: bool):
    """The student's HF folder and projections.safetensors (rank 0; sharded: gathered with every rank first)."""
    if not sharded:
        if info.is_main:
            save_plain_student(student, tokenizer, loss_fn, out_dir)
        return
    state = sharding.full_state_dict(forward)
    if not info.is_main:
        return
    weights = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    projections = {k.removeprefix("loss_fn."): v.contiguous() for k, v in state.items() if k.startswith("loss_fn.")}
    if not weights:
        raise FadkdError(f"the gathered state of the sharded student is empty; {out_dir} was not written")
    folder = safe_dir(out_dir, "student")
    student.save_pretrained(folder, state_dict=weights)
    tokenizer.save_pretrained(folder)
    if projections:
        save_file(projections, str(out_dir / "projections.safetensors"))
