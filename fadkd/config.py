"""The typed configuration: dataclasses registered in Hydra's ConfigStore.

YAML files under conf/ hold values; these classes hold types, defaults and field docs.
Hydra merges the YAML into the schema (type-checking every key), and the CLI converts the
result to these objects once with `to_config`. Nothing below the CLI sees a DictConfig.
Validation lives in `__post_init__` and raises ConfigError with a message a user can act on.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fadkd.errors import FadkdError


class ConfigError(FadkdError):
    """A configuration value is invalid."""


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

    def __post_init__(self) -> None:
        if self.path is None:
            _positive(f"{self.name}.num_layers", self.num_layers)
            _positive(f"{self.name}.hidden_size", self.hidden_size)
            _positive(f"{self.name}.num_heads", self.num_heads)
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"model '{self.name}': hidden_size {self.hidden_size} is not divisible by "
                    f"num_heads {self.num_heads}; pick a head count that divides the width"
                )


@dataclass
class TaskConfig:
    """Which GLUE task, and where its data comes from."""

    name: str = "sst2"  # cola sst2 mrpc stsb qqp mnli mnli_mm qnli rte wnli
    # Folder in the GLUE layout (<data_dir>/SST-2/train.tsv ...), "hub" to load glue/<task>
    # from the Hugging Face Hub, or "sample" for the SST-2 sample shipped with fadkd.
    data_dir: str | None = None
    max_length: int = 128  # tokens per example (pairs included), longer ones are truncated
    max_train_samples: int | None = None  # first N training rows (null = all)
    max_eval_samples: int | None = None  # first N dev rows (null = all)

    def __post_init__(self) -> None:
        _positive("task.max_length", self.max_length)
        if self.data_dir is None:
            raise ConfigError(
                f"task.data_dir is not set for task '{self.name}': pass task.data_dir=<folder in "
                "the GLUE layout, e.g. ../shared/data/glue>, or task.data_dir=hub to load it from "
                "the Hugging Face Hub"
            )


MAPPING_STRATEGIES = ("uniform", "last", "explicit")


@dataclass
class MappingConfig:
    """Which student layer learns from which teacher layer (see fadkd/mapping.py)."""

    strategy: str = "uniform"  # uniform | last | explicit
    pairs: list[Any] | None = None  # explicit only: [[student, teacher], ...], 1-based
    layer_weights: list[float] | None = None  # λ per pair (default 1.0 each)
    include_embeddings: bool = False  # also align the embedding outputs (layer 0 <-> 0)

    def __post_init__(self) -> None:
        if self.strategy not in MAPPING_STRATEGIES:
            raise ConfigError(
                f"mapping.strategy='{self.strategy}' is unknown; choose one of "
                f"{', '.join(MAPPING_STRATEGIES)} (e.g. mapping=uniform)"
            )


@dataclass
class LossConfig:
    """Weights of the objective L = α·KD + β·cos + γ·mse + δ·attn + ce·task."""

    alpha: float = 1.0  # KL(teacher ‖ student) on logits softened by temperature, times τ²
    temperature: float = 2.0  # τ
    beta: float = 1.0  # 1 − cos of mapped hidden states
    gamma: float = 1.0  # MSE of mapped hidden states
    delta: float = 1.0  # MSE of mapped attention maps (runs both models with eager attention)
    ce: float = 1.0  # the task's own loss on hard labels
    shared_projection: bool = False  # one Linear for every pair instead of one per pair

    def __post_init__(self) -> None:
        weights = {k: getattr(self, k) for k in ("alpha", "beta", "gamma", "delta", "ce")}
        for key, value in weights.items():
            if value < 0:
                raise ConfigError(f"loss.{key}={value} is negative; loss weights must be >= 0")
        if not any(weights.values()):
            raise ConfigError(
                "every loss weight is 0, so there is nothing to train: set at least one of "
                "loss.alpha, loss.beta, loss.gamma, loss.delta, loss.ce above 0"
            )
        if self.temperature <= 0:
            raise ConfigError(f"loss.temperature={self.temperature} must be > 0 (typical: 1 to 4)")

    @property
    def needs_features(self) -> bool:
        """True when any term compares hidden states or attention maps position by position."""
        return self.beta > 0 or self.gamma > 0 or self.delta > 0


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = 10
    max_steps: int = -1  # > 0 stops after this many optimizer steps (overrides epochs)
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # share of steps with linear warmup, then linear decay to 0
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    eval_every: int = 0  # evaluate on dev every N steps (0 = at the end of each epoch only)
    log_every: int = 10  # write a row to steps.jsonl every N steps
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # torch CPU threads (0 = torch's default)
    save_student: bool = True  # save the best student as a Hugging Face folder
    logger: str = "jsonl"  # jsonl (steps.jsonl, evals.jsonl) | tensorboard (those + events) | none
    checkpoint_every: int = 0  # write a checkpoint every N steps (0 = at each evaluation only)
    keep_checkpoints: int = 2  # newest checkpoints kept
    resume: bool = False  # continue from the newest complete checkpoint in the run folder
    overwrite: bool = False  # reuse a run folder that holds another run, deleting its files
    on_nonfinite: str = "stop"  # NaN/inf loss or gradient: stop (checkpoint of the last good state) | skip
    max_nonfinite_skips: int = 10  # with on_nonfinite=skip: stop after this many skipped steps

    def __post_init__(self) -> None:
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"train.on_nonfinite='{self.on_nonfinite}' is unknown; choose stop or skip")
        if self.logger not in ("jsonl", "tensorboard", "none"):
            raise ConfigError(f"train.logger='{self.logger}' is unknown; choose jsonl, tensorboard or none")
        if self.resume and self.overwrite:
            raise ConfigError("train.resume=true and train.overwrite=true contradict each other; pick one")
        _positive("train.batch_size", self.batch_size)
        _positive("train.eval_batch_size", self.eval_batch_size)
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0 (typical: 1e-5 to 1e-3)")
        if self.epochs < 1 and self.max_steps <= 0:
            raise ConfigError("train.epochs must be >= 1 unless train.max_steps > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio={self.warmup_ratio} must be in [0, 1)")


@dataclass
class Config:
    """Everything one `fadkd train` run needs."""

    # Defaults equal conf/teacher/tiny.yaml and conf/student/tiny.yaml.
    teacher: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            "tiny-teacher", num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128, init_seed=1
        )
    )
    student: ModelConfig = field(default_factory=lambda: ModelConfig("tiny-student", init_seed=2))
    task: TaskConfig = field(default_factory=lambda: TaskConfig(data_dir="sample"))
    mapping: MappingConfig = field(default_factory=MappingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key}={value} must be a positive integer")


def register_configs() -> None:
    """Register the schema so conf/config.yaml can extend it (`- fadkd_schema` in defaults)."""
    ConfigStore.instance().store(name="fadkd_schema", node=Config)


def to_config(cfg: DictConfig) -> Config:
    """Convert Hydra's composed config to typed objects once, with readable errors."""
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        return OmegaConf.to_object(plain)
    except OmegaConfBaseException as err:  # missing values, wrong types
        raise ConfigError(f"invalid config: {err}") from None
