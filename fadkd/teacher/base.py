"""The one teacher interface: what the loop, the cache builders and the speed benchmark call.

A teacher gives the frozen model's Outputs for a training batch, and its dev metrics measured at
set-up. Two implementations serve GLUE and causal LMs alike: `LiveTeacher` runs the model (keeping
only the layers the loss spec asks for), `CachedTeacher` reads a teacher cache (fadkd/teacher/cache.py,
fadkd/teacher/lm_cache.py: both answer `outputs(indices, mask, device)` and hold a `meta` record).
Loading, sharding, evaluating and caching happen in set-up (fadkd/teacher/setup.py), never in the loop.
"""

from typing import Protocol

import torch

from fadkd.models.capture import Layers, Outputs, run_model
from fadkd.models.load import count_parameters


class Teacher(Protocol):
    metrics: dict[str, float] | None  # its dev metrics (None when not evaluated)

    def outputs(self, batch) -> Outputs:
        """The teacher's side of a training batch (a fadkd.data.batches.Batch)."""
        ...

    @property
    def params(self) -> int | None:
        """Its parameter count, for the run's record."""
        ...


class LiveTeacher:
    """The frozen model, run on each batch's teacher inputs."""

    def __init__(self, model: torch.nn.Module, layers: Layers, metrics: dict | None):
        self.model, self.layers, self.metrics = model, layers, metrics

    def outputs(self, batch) -> Outputs:
        with torch.no_grad():  # not inference_mode: its tensors cannot be saved for backward
            return run_model(self.model, batch.teacher, self.layers)

    @property
    def params(self) -> int:
        return count_parameters(self.model)


class CachedTeacher:
    """The teacher's outputs read from a cache; the model is never loaded for training."""

    def __init__(self, cache, metrics: dict | None, device: torch.device):
        self.cache, self.metrics, self.device = cache, metrics, device

    def outputs(self, batch) -> Outputs:
        return self.cache.outputs(batch.indices, batch.student["attention_mask"], self.device)

    @property
    def params(self) -> int | None:
        return self.cache.meta.get("teacher_params")
