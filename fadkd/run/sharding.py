"""train.strategy=fsdp: FSDP2 (torch.distributed.fsdp.fully_shard) over every rank, under torchrun.

Each rank keeps 1/N of every parameter, gradient and AdamW moment of the student and the loss's
learned projections, and 1/N of the frozen teacher's parameters; a block's full weights exist only
while it runs (all-gathered before its forward, resharded after). What is sharded, on one explicit
device mesh (init_device_mesh(device, (N,)): never a mesh guessed from a GPU the host happens to have):

- every transformer block of the student, then the student's root (embeddings, head), then the loss's
  projections, then StudentLoss as the root that runs them together (fadkd/run/step.py);
- every block of the teacher and its root, with reshard_after_forward: it stays in eval mode, runs
  under no_grad, and has no gradient, so nothing is reduced for it. A cached teacher has no model.

train.precision=bf16 adds MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): the all-gathered
parameters are bf16, the sharded master copies, the gradients' reduction and AdamW stay fp32.

Gradients: FSDP2 averages them over ranks as DDP does. Over gloo its AVG reduce-scatter sums instead
(torch issue #162338), so the average is built from SUM explicitly: force_sum_reduction_for_comms plus a
gradient divide factor of N on every group; tests/test_distributed.py checks 2 ranks against 1 process.
"""

import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from fadkd.errors import FadkdError
from fadkd.models.load import ModelError
from fadkd.models.shrink import layer_list


def blocks(model: nn.Module, role: str) -> list[nn.Module]:
    """The transformer blocks FSDP shards one by one (a ModuleList as long as config.num_hidden_layers)."""
    try:
        return list(layer_list(model))
    except (ModelError, AttributeError):
        depth = getattr(getattr(model, "config", None), "num_hidden_layers", "?")
        raise FadkdError(
            f"train.strategy=fsdp shards the {role} block by block, but no list of its {depth} transformer blocks "
            f"was found in {type(model).__name__} (fadkd looks for model.layers or a ModuleList of "
            "config.num_hidden_layers modules); use train.strategy=ddp for this model"
        ) from None


def _policy(precision: str) -> MixedPrecisionPolicy:
    if precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def _shard(modules: list[nn.Module], mesh, precision: str, reshard_after_forward: bool = True) -> None:
    for module in modules:
        fully_shard(module, mesh=mesh, mp_policy=_policy(precision), reshard_after_forward=reshard_after_forward)


def _average_by_sum(module: nn.Module, world: int) -> None:
    """Gradients averaged as SUM / N on every FSDP group (gloo's AVG sums: torch issue #162338)."""
    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.set_force_sum_reduction_for_comms(True)
            sub.set_gradient_divide_factor(float(world))


def make_mesh(device: torch.device, world: int):
    return init_device_mesh(device.type, (world,))


def shard_student(forward: nn.Module, student: nn.Module, loss_fn: nn.Module, mesh, precision: str) -> None:
    """Blocks, the student's root, the projections (if any), then StudentLoss `forward` as the root."""
    parts = [*blocks(student, "student"), student]
    if any(True for _ in loss_fn.parameters()):
        parts.append(loss_fn)
    _shard([*parts, forward], mesh, precision)
    _average_by_sum(forward, mesh.size())
    # FSDP2 warns at every student forward that the model "returned a view tensor" on which an in-place op
    # would skip its backward hook. No loss term writes into the student's outputs in place, and the 1- vs
    # 2-process test (tests/test_distributed.py: same losses and weights) would fail if a hook were skipped.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor", category=UserWarning)


def shard_teacher(model: nn.Module, mesh, precision: str) -> None:
    """The frozen teacher: blocks and root, resharded after each forward (eval mode, no gradients)."""
    model.eval().requires_grad_(False)
    _shard([*blocks(model, "teacher"), model], mesh, precision, reshard_after_forward=True)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every rank's shards gathered into plain CPU tensors, on rank 0 (empty elsewhere); every rank calls it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(module, options=options)
    return state if dist.get_rank() == 0 else {}
