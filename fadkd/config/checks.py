"""Field checks behind the typed config's `__post_init__` (fadkd/config/schema.py).

Each check raises ConfigError with a message that names the key, the bad value and a fix.
The simple ones (a weight is negative, an unknown precision) stay inline in config.py; the
multi-field ones live here: the α/δ term choice, and the causal-LM model and task fields.
"""

import re
from typing import TYPE_CHECKING

from fadkd.errors import FadkdError

if TYPE_CHECKING:
    from fadkd.config.schema import LossConfig, ModelConfig, TaskConfig, TrainConfig


class ConfigError(FadkdError):
    """A configuration value is invalid."""


KD_TERMS = ("forward_kl", "reverse_kl", "symmetric_kl", "jsd", "soft_ce", "uld")  # = fadkd.losses.kd.KD_TERMS
MODEL_ARCHS = ("bert", "llama")
MODEL_INITS = ("random", "from_teacher")


def check_positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key}={value} must be a positive integer")


def check_term_choice(cfg: "LossConfig") -> None:
    """loss.kd, loss.jsd_beta, loss.attn, loss.relation_heads and loss.relations."""
    if cfg.kd not in KD_TERMS:
        raise ConfigError(f"loss.kd='{cfg.kd}' is unknown; choose one of {', '.join(KD_TERMS)}")
    if not 0 <= cfg.jsd_beta <= 1:
        raise ConfigError(
            f"loss.jsd_beta={cfg.jsd_beta} must be in [0, 1] (the teacher's share of the mixture; 0.5 = symmetric JSD)"
        )
    if cfg.attn not in ("maps", "relations"):
        raise ConfigError(f"loss.attn='{cfg.attn}' is unknown; choose maps or relations")
    if cfg.relation_heads is not None and cfg.relation_heads <= 0:
        raise ConfigError(f"loss.relation_heads={cfg.relation_heads} must be a positive integer (or null)")
    chosen = list(cfg.relations)
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= {"qq", "kk", "vv"}:
        raise ConfigError(f"loss.relations={chosen} must list some of qq, kk, vv, each once, e.g. [qq,kk,vv]")


def check_lm_model(cfg: "ModelConfig") -> None:
    """The causal-LM fields of a model: tiny Llama shape, and the from_teacher layer choice."""
    if cfg.arch not in MODEL_ARCHS:
        raise ConfigError(f"model '{cfg.name}': arch='{cfg.arch}' is unknown; choose {' or '.join(MODEL_ARCHS)}")
    if cfg.num_kv_heads is not None and (cfg.num_kv_heads <= 0 or cfg.num_heads % cfg.num_kv_heads):
        raise ConfigError(
            f"model '{cfg.name}': num_kv_heads={cfg.num_kv_heads} must be positive and divide "
            f"num_heads={cfg.num_heads} (grouped-query attention shares each key/value head)"
        )
    if cfg.init not in MODEL_INITS:
        raise ConfigError(f"model '{cfg.name}': init='{cfg.init}' is unknown; choose random or from_teacher")
    chosen = [k for k in ("keep_layers", "every_k") if getattr(cfg, k) is not None]
    if cfg.init == "random":
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


def check_augment(cfg: "TaskConfig") -> None:
    """task.augment, task.augment_p (fadkd/data/augment.py)."""
    if isinstance(cfg.augment, bool) or cfg.augment < 0:
        raise ConfigError(f"task.augment={cfg.augment} must be a whole number >= 0 (perturbed copies per training row)")
    if not 0 < cfg.augment_p < 1:
        raise ConfigError(f"task.augment_p={cfg.augment_p} must be between 0 and 1: the chance each word is dropped")
    if cfg.augment_method not in ("eda", "lm"):
        raise ConfigError(f"task.augment_method={cfg.augment_method!r} is not one of eda, lm")
    if isinstance(cfg.unlabelled_rows, bool) or cfg.unlabelled_rows < 0:
        raise ConfigError(f"task.unlabelled_rows={cfg.unlabelled_rows} must be a whole number >= 0")
    if cfg.unlabelled_rows and cfg.max_train_samples is None:
        raise ConfigError(
            f"task.unlabelled_rows={cfg.unlabelled_rows} hides the labels of the training rows after the first "
            "task.max_train_samples, which is unset (every row is labelled); set task.max_train_samples=N"
        )
    if (cfg.unlabelled_rows or cfg.unlabelled_file) and cfg.name.strip().lower().startswith("lm_"):
        raise ConfigError(
            f"task.unlabelled_rows / task.unlabelled_file add unlabelled GLUE rows; causal-LM task '{cfg.name}' "
            "has no labels to hide: leave them unset"
        )
    if cfg.augment and cfg.name.strip().lower().startswith("lm_"):
        raise ConfigError(
            f"task.augment={cfg.augment} perturbs GLUE rows; causal-LM task '{cfg.name}' trains on packed text: "
            "set task.augment=0"
        )


def check_lm_task(cfg: "TaskConfig") -> None:
    """The causal-LM fields: lengths, prompt share, and lm_text's files."""
    check_positive("task.max_new_tokens", cfg.max_new_tokens)
    if cfg.block_size < 2:
        raise ConfigError(f"task.block_size={cfg.block_size} must be >= 2 (a token and the one it predicts)")
    if not 0 < cfg.prompt_fraction < 1:
        raise ConfigError(
            f"task.prompt_fraction={cfg.prompt_fraction} must be between 0 and 1 (exclusive): the share of "
            "each held-out text given as the prompt, the rest being the reference continuation"
        )
    if cfg.eval_samples is not None:
        check_positive("task.eval_samples", cfg.eval_samples)
    if cfg.name == "lm_text":
        for key in ("train_file", "eval_file"):
            if getattr(cfg, key) is None:
                raise ConfigError(
                    f"task.{key} is not set for task 'lm_text': pass task.train_file=<texts> "
                    "task.eval_file=<held-out texts> (.txt one text per line, .jsonl, or a datasets folder)"
                )


def check_train_choices(cfg: "TrainConfig") -> None:
    """train.device's form (its availability is checked when the run starts) and train.resume."""
    if not isinstance(cfg.device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(
            f"train.device={cfg.device!r} is not a device fadkd knows; choose auto, cpu, cuda, cuda:N (N = GPU "
            "number) or mps, e.g. train.device=cpu"
        )
    resume = cfg.resume
    if isinstance(resume, str):
        resume = {"true": True, "false": False, "force": "force"}.get(resume.strip().lower(), resume)
    if not (isinstance(resume, bool) or resume == "force"):
        raise ConfigError(
            f"train.resume={cfg.resume!r} is not one of true, false, force: true continues the run in the folder, "
            "force continues it even with settings that differ from its config.yaml"
        )
    cfg.resume = resume
