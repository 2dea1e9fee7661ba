"""The teacher's set-up, one path for GLUE classifiers and causal LMs: check, cache, load, shard, dev metrics.

`set_up_teacher` runs the steps below in order, one function each; a task family supplies only what
differs, as a `TeacherFamily` (GlueTeacher in fadkd/teacher/glue.py, LmTeacher in fadkd/teacher/lm.py):
how its model loads, how it is scored on dev, how its cache is keyed, opened and built.

1. check: refuse, before any teacher work, what the pair or the cache cannot do (tokenizers that do not
   align, terms a cache does not hold);
2. cache (cache.enabled): the cache for this run's key is opened; a teacher whose cache holds its dev
   metrics (GLUE) is then never loaded;
3. load and shard: the frozen model (eval mode, no gradients), sharded at once under train.strategy=fsdp
   (fadkd/run/sharding.py), so every later forward, set-up's included, is a sharded one;
4. dev metrics: the run's record of the teacher (causal LMs: also the reference continuations for the
   student's vs-teacher metrics, written to teacher_generations.jsonl). `score_teacher` is steps 3-4. A
   causal LM's builder loads its teacher (the student may be cut from it), and fadkd/run/train.py scores
   it at once, before the loss spec: its evaluation's data loader draws from the RNG, and the spec's
   projections draw after it, as they always have. A GLUE teacher is loaded once the spec says how
   (attention maps, the cache key), so steps 3-4 run inside `set_up_teacher`;
5. cache build: the teacher's one pass over the training rows, written to the cache folder.

Ranks (every rank calls `set_up_teacher`, and its collectives come in one order on all of them). A sharded
teacher's forward is a collective (each block gathers its shards from every rank), so under fsdp every
rank evaluates it (the same dev rows) and runs the cache build's forwards (the same batches; rank 0 alone
writes the files). Unsharded (one process, ddp), rank 0 evaluates and builds while the others wait (the
others load no teacher for a cache build), then they open the cache it wrote. Either way rank 0's dev
metrics are every rank's (`distributed.on_ranks`, the rule the student's evaluation follows too). The
cache folder must be one that every process sees.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from fadkd.losses.spec import LossSpec
from fadkd.run import distributed
from fadkd.run.sharding import shard_teacher
from fadkd.teacher.base import CachedTeacher, LiveTeacher, Teacher
from fadkd.teacher.cache import CacheError


@dataclass
class Ranks:
    """Where the teacher runs: this rank, and the device mesh when it is sharded (train.strategy=fsdp)."""

    dist: distributed.Dist
    mesh: object | None = None  # torch's DeviceMesh over every rank; None: one process or ddp
    precision: str = "fp32"  # train.precision (bf16: the sharded teacher's gathered parameters)

    @property
    def sharded(self) -> bool:
        return self.mesh is not None


class TeacherFamily(Protocol):
    """What a task family supplies to the set-up; `spec` says which layers the loss reads."""

    device: torch.device
    trains: bool  # False: loaded only to be scored (a causal LM's reference for the student), then freed
    cached: bool  # cache.enabled, for a teacher that trains
    # True: its builder loaded the model (a causal LM's student may be cut from it), and it is scored right
    # after the builder, before the loss spec (whose projections then draw from the RNG, as they always did).
    scored_first: bool
    model: nn.Module | None  # the model once loaded (frozen, and sharded under fsdp)
    metrics: dict[str, float] | None  # its dev metrics once scored

    def check(self, spec: LossSpec) -> None:
        """Refuse, before any teacher work, what the pair or the cache cannot do."""

    def load(self, spec: LossSpec) -> nn.Module:
        """The teacher model on the run's device (the set-up freezes and shards it)."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Its dev metrics."""

    def record(self, out_dir: Path) -> None:
        """Rank 0, after the evaluation: the files it leaves in the run folder."""

    def open_cache(self, spec: LossSpec) -> tuple[Path, object | None]:
        """The cache folder for this run's key, and the cache in it when complete (else None)."""

    def stored_metrics(self, cache) -> dict[str, float] | None:
        """The dev metrics a cache holds (None: the teacher is loaded to measure them)."""

    def build_cache(self, folder: Path, model: nn.Module, spec: LossSpec, metrics: dict | None):
        """The teacher's pass over the training rows, written to `folder`; returns the opened cache."""

    def join_cache_build(self, model: nn.Module, spec: LossSpec) -> None:
        """The forwards of the cache build, writing nothing (the other ranks of a sharded teacher)."""


def score_teacher(family: TeacherFamily, spec: LossSpec | None, ranks: Ranks, out_dir: Path, log, load=True) -> None:
    """Steps 3-4, into family.model and family.metrics: the model loaded (unless loaded already, or `load` is
    False), frozen and sharded; its dev metrics, rank 0's on every rank. Every rank calls it."""
    if family.model is None and load:
        family.model = family.load(spec)
    if family.model is not None:
        freeze(family.model, ranks, log)
    family.metrics = distributed.on_ranks(lambda: family.evaluate(family.model), ranks.dist, ranks.sharded)
    if ranks.dist.is_main:
        family.record(out_dir)


def set_up_teacher(
    family: TeacherFamily | None, spec: LossSpec, ranks: Ranks, out_dir: Path, log
) -> tuple[Teacher | None, dict | None]:
    """The loop's teacher (live, cached, or None) and its dev metrics; steps 3-4 unless scored already."""
    if family is None:
        return None, None
    family.check(spec)
    folder, cache = open_cache(family, spec, ranks.dist)
    if cache is not None and (stored := family.stored_metrics(cache)) is not None:
        log(f"teacher cache: reading {folder}")  # the model is never loaded
        return CachedTeacher(cache, stored, family.device), stored
    building = family.cached and cache is None
    if family.metrics is None:  # not scored yet (GLUE); an unsharded cache build needs the model on rank 0 alone
        score_teacher(family, spec, ranks, out_dir, log, load=not building or ranks.dist.is_main or ranks.sharded)
    if not family.trains:
        return None, family.metrics  # only scored: the model goes with the family
    if not family.cached:
        return LiveTeacher(family.model, spec.teacher_layers, family.metrics), family.metrics
    if building:
        cache = build_cache(family, folder, spec, ranks)
    else:
        log(f"teacher cache: reading {folder}")
    return CachedTeacher(cache, family.metrics, family.device), family.metrics  # the model goes with the family


def open_cache(family: TeacherFamily, spec: LossSpec, dist: distributed.Dist) -> tuple[Path | None, object | None]:
    """cache.enabled: the folder and its complete cache, or None; every rank takes rank 0's verdict."""
    if not family.cached:
        return None, None
    folder, cache = family.open_cache(spec)
    if distributed.broadcast(cache is not None, dist) != (cache is not None):
        raise CacheError(
            f"rank 0 and rank {dist.rank} see the teacher cache at {folder} differently (one finds it complete); "
            "every process must see one cache.dir: put it on a filesystem all of them share"
        )
    return folder, cache


def freeze(model: nn.Module, ranks: Ranks, log) -> None:
    """Eval mode, no gradients, and sharded at once under fsdp, so that every forward after it is sharded."""
    model.eval().requires_grad_(False)
    if ranks.sharded:
        total = sum(p.numel() for p in model.parameters())
        shard_teacher(model, ranks.mesh, ranks.precision)
        here = sum(p.to_local().numel() for p in model.parameters())  # DTensors: this rank's shard
        log(f"teacher sharded over {ranks.mesh.size()} processes before its first forward: {here:,} of {total:,} "
            "parameters on rank 0")  # fmt: skip


def build_cache(family: TeacherFamily, folder: Path, spec: LossSpec, ranks: Ranks):
    """Rank 0 builds the cache (sharded: the others run the same forwards); then every rank opens it."""
    dist = ranks.dist
    if dist.is_main:
        cache = family.build_cache(folder, family.model, spec, family.metrics)
    elif ranks.sharded:
        family.join_cache_build(family.model, spec)
    distributed.barrier(dist)  # unsharded, the others wait here for rank 0's build
    if dist.is_main:
        return cache
    _, cache = family.open_cache(spec)
    if cache is None:
        raise CacheError(
            f"rank 0 built the teacher cache at {folder}, but rank {dist.rank} cannot open it there; every process "
            "must see one cache.dir: put it on a filesystem all of them share"
        )
    return cache
