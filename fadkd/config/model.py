"""The teacher / student section of the typed config (fadkd/config/schema.py), with its checks."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from fadkd.config.checks import ConfigError, check_positive, choose
from fadkd.config.choices import ModelArch, ModelInit
from fadkd.config.prune import PruneConfig


@dataclass
class ModelConfig:
    """A teacher or a student: a Hugging Face folder / Hub id, or a tiny random-init BERT."""

    name: str = "tiny"  # label used in logs and tables
    path: str | None = None  # local HF folder or Hub id; null = build the tiny BERT below
    tokenizer: str | None = None  # default: the model's own (path), or the shipped tiny one
    trust_remote_code: bool = False  # run code shipped with a Hub model: only for models you trust
    # Used only when path is null: a random-init BERT built from config (no weights needed).
    num_layers: int = 2
    hidden_size: int = 32
    num_heads: int = 2
    intermediate_size: int = 64
    max_position_embeddings: int = 512
    init_seed: int = 0
    dropout: float = 0.1  # tiny BERT: hidden and attention dropout (0 = deterministic forwards)
    arch: ModelArch = ModelArch.bert  # tiny presets: bert (classifiers) | llama (causal LMs, fadkd/models/lm.py)
    num_kv_heads: int | None = None  # llama: key/value heads, grouped-query attention (null = num_heads)
    # A student made from the teacher's weights (causal LMs, DistilBERT-style): some of its layers.
    init: ModelInit = ModelInit.random  # random (path, or the tiny preset above) | from_teacher | pruned
    keep_layers: list[int] | None = None  # from_teacher: teacher layers kept, 0-based (model.layers[i])
    every_k: int | None = None  # from_teacher: keep teacher layers 0, k, 2k, ... instead
    # from_teacher: take the kept layers (and embeddings) from this checkpoint of the teacher's architecture
    # (e.g. its pretrained base, as Patient KD does) instead of the teacher itself (null = the teacher)
    layers_from: str | None = None
    # init=pruned: the teacher pruned in depth and width by importance (fadkd/config/prune.py, fadkd/models/prune.py)
    prune: PruneConfig = field(default_factory=PruneConfig)

    def __post_init__(self) -> None:
        self.arch = choose(ModelArch, f"model '{self.name}': arch", self.arch)
        if self.num_kv_heads is not None and (self.num_kv_heads <= 0 or self.num_heads % self.num_kv_heads):
            raise ConfigError(
                f"model '{self.name}': num_kv_heads={self.num_kv_heads} must be positive and divide "
                f"num_heads={self.num_heads} (grouped-query attention shares each key/value head)"
            )
        self.init = choose(ModelInit, f"model '{self.name}': init", self.init)
        if isinstance(self.prune, Mapping):  # read back from a run's config.yaml as a plain dict
            self.prune = PruneConfig(**self.prune)
        _check_init(self)
        if self.path is None:
            check_positive(f"model '{self.name}': num_layers", self.num_layers)
            check_positive(f"model '{self.name}': hidden_size", self.hidden_size)
            check_positive(f"model '{self.name}': num_heads", self.num_heads)
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"model '{self.name}': hidden_size {self.hidden_size} is not divisible by "
                    f"num_heads {self.num_heads}; pick a head count that divides the width"
                )


def _check_init(cfg: ModelConfig) -> None:
    """init=from_teacher and the layer choice that goes with it (keep_layers, every_k, layers_from)."""
    chosen = [k for k in ("keep_layers", "every_k") if getattr(cfg, k) is not None]
    if cfg.prune != PruneConfig() and cfg.init != ModelInit.pruned:
        raise ConfigError(
            f"model '{cfg.name}': prune.* is set but init={cfg.init}; it shapes the student only with "
            "student.init=pruned (student=pruned)"
        )
    if cfg.init == ModelInit.pruned:
        _check_pruned(cfg, chosen)
        return
    if cfg.init == ModelInit.random:
        if cfg.layers_from is not None:
            raise ConfigError(
                f"model '{cfg.name}': layers_from={cfg.layers_from} is set but init=random; it gives the kept layers "
                "only with student.init=from_teacher"
            )
        if chosen:
            raise ConfigError(
                f"model '{cfg.name}': {chosen[0]} is set but init=random; it picks teacher layers only "
                "with student.init=from_teacher"
            )
        return
    if cfg.path is not None:
        raise ConfigError(
            f"model '{cfg.name}': init=from_teacher builds the student from the teacher's layers, so "
            f"path={cfg.path} would be ignored; set student.path=null, or student.init=random to load it"
        )
    if len(chosen) != 1:
        raise ConfigError(
            f"model '{cfg.name}': init=from_teacher needs exactly one of student.keep_layers=[0,3,6] "
            "(0-based teacher layers) or student.every_k=3"
        )
    if cfg.every_k is not None and cfg.every_k < 1:
        raise ConfigError(f"model '{cfg.name}': every_k={cfg.every_k} must be a positive integer")
    keep = cfg.keep_layers
    if keep is not None and (not keep or any(k < 0 for k in keep) or list(keep) != sorted(set(keep))):
        raise ConfigError(
            f"student.keep_layers={list(keep)} must list teacher layers (0-based) in increasing order, "
            "each once, e.g. [0,3,6]"
        )


def _check_pruned(cfg: ModelConfig, chosen: list[str]) -> None:
    """init=pruned takes its shape from prune.* and its weights from the teacher."""
    given = [*chosen, *(["layers_from"] if cfg.layers_from is not None else [])]
    if given:
        raise ConfigError(
            f"model '{cfg.name}': {given[0]} belongs to init=from_teacher; with init=pruned choose the layers "
            "with student.prune.layers (a count or a list)"
        )
    if cfg.path is not None:
        raise ConfigError(
            f"model '{cfg.name}': init=pruned builds the student from the teacher's weights, so path={cfg.path} "
            "would be ignored; set student.path=null, or student.init=random to load that folder"
        )
