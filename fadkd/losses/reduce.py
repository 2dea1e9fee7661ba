"""One reduction for every mean a loss term takes: over this process's real tokens / rows, or over the
global batch's when several processes train one run.

A term's value is Σ (per-position values) / count. With N processes each holding a shard of the global
batch, the mean of the N per-process means is not the mean over the global batch unless every shard
holds as many real tokens; and DistributedDataParallel / FSDP average the gradients over processes. So
inside `global_counts(reduce)` (fadkd/run/step.py enters it around a step's forward under torchrun)
a term returns N · local_sum / global_count, the count summed over every process by `reduce`: the
average over processes of these values, and of their gradients, is then exactly the one-process term
over the global batch (transformers' gradient-accumulation fix of 4.46 normalises the same way).
Outside it (one process, evaluation, the benchmarks) `mean_over` is the plain local mean.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

# count (float32, this process's; any shape) -> (its sum over every process, the number of processes)
CountReduce = Callable[[Tensor], tuple[Tensor, int]]
_REDUCE: ContextVar[CountReduce | None] = ContextVar("fadkd_count_reduce", default=None)


def mean_over(total: Tensor, count) -> Tensor:
    """total / count (count clamped to at least 1), or its global-batch form inside `global_counts`."""
    count = torch.as_tensor(count, device=total.device).detach().to(torch.float32)
    reduce = _REDUCE.get()
    if reduce is None:
        return total / count.clamp_min(1)
    global_count, world = reduce(count)
    return total * (world / global_count.clamp_min(1))


def summed_over_processes(values: Tensor) -> Tensor:
    """`values` summed over every process inside `global_counts` (one all-reduce), else `values` as they are."""
    reduce = _REDUCE.get()
    return values if reduce is None else reduce(values)[0]


@contextmanager
def global_counts(reduce: CountReduce | None) -> Iterator[None]:
    """Within this block, means divide by the count over every process (`reduce`); None: local means."""
    token = _REDUCE.set(reduce)
    try:
        yield
    finally:
        _REDUCE.reset(token)
