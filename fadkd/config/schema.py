"""The typed configuration: dataclasses registered in Hydra's ConfigStore.

YAML files under conf/ hold values; these classes hold types, defaults and field docs, one
module per section: teacher / student (fadkd/config/model.py), task (task.py), mapping and
loss (loss.py), train and cache (train.py); the words a field may take are Enums
(fadkd/config/choices.py). Hydra merges the YAML into the schema (type-checking every key), and
the CLI converts the result to these objects once with `to_config`. Nothing below the CLI sees a
DictConfig. Validation lives in each class's `__post_init__` and raises ConfigError with a
message a user can act on; `Config.__post_init__` adds the checks across sections and the range
of every number (fadkd/config/ranges.py).
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fadkd.config.checks import ConfigError
from fadkd.config.choices import ModelArch
from fadkd.config.loss import LossConfig, MappingConfig
from fadkd.config.model import ModelConfig
from fadkd.config.ranges import check_ranges
from fadkd.config.task import TaskConfig
from fadkd.config.train import CacheConfig, TrainConfig
from fadkd.losses.table import feature_weights, uses_teacher

# The sections, importable from here as before the schema was split by section.
__all__ = [
    "CacheConfig",
    "Config",
    "ConfigError",
    "LossConfig",
    "MappingConfig",
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "register_configs",
    "to_config",
]


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
    cache: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self) -> None:
        check_ranges(self)  # every numeric field finite and in range (fadkd/config/ranges.py)
        t = self.task
        unlabelled = [f"{k}={v}" for k, v in (("task.augment", t.augment), ("task.unlabelled_rows", t.unlabelled_rows),
                      ("task.unlabelled_file", t.unlabelled_file)) if v]  # fmt: skip
        if unlabelled and not uses_teacher(self.loss):
            raise ConfigError(
                f"{unlabelled[0]} adds rows without hard labels, which only a teacher term can "
                f"learn from; set loss.alpha (or {feature_weights()}) above 0, or leave them out"
            )
        if self.loss.projection_init == "channels" and self.student.init != "pruned" and self.student.path is None:
            raise ConfigError(
                "loss.projection_init=channels starts each projection as the teacher channels a pruned student kept; "
                "use it with student=pruned (or student.path=<a folder it wrote>), or choose random or lstsq"
            )
        for role, model in (("teacher", self.teacher), ("student", self.student)):
            if not t.is_lm and model.path is None and model.arch == ModelArch.llama:
                raise ConfigError(
                    f"{role} '{model.name}' is a tiny Llama (a causal LM) but task '{self.task.name}' classifies; "
                    f"use it with task=lm_sst2 or task=lm_text, or {role}=tiny for GLUE tasks"
                )


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
