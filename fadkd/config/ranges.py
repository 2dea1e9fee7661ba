"""The allowed range of every numeric field of the schema (fadkd/config/schema.py), checked in one place.

`RANGES` names each int / float field as `<section>.<field>` (the model fields once, as `model.*`:
they apply to teacher.* and student.*). `check_ranges` runs from `Config.__post_init__`, after
each section's own checks, so every value that reaches the loop is finite and in range, and the
message names the key, the value, what is allowed and an example. tests/test_fuzz.py requires
an entry here for every numeric field, and tries values outside each range.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fadkd.config.checks import ConfigError
from fadkd.losses.table import WEIGHT_KEYS

SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """low <= value <= high (or < where open); null: None is allowed too."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: bool = False
    means: str = ""  # what the value is, for the message

    def allowed(self, is_int: bool) -> str:
        kind = "a whole number" if is_int else "a finite number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_num(self.high)}")
        text = f"{kind} {' and '.join(parts)}" if parts else kind
        return text + (", or null" if self.null else "")

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


POS = Range(low=1)
SEED = Range(low=0, high=SEED_MAX, means="a random seed")
WEIGHT = Range(low=0, means="a loss weight (0 turns its term off)")

RANGES: dict[str, Range] = {
    "model.num_layers": Range(low=1, means="transformer layers of the tiny preset"),
    "model.hidden_size": Range(low=1, means="width of the tiny preset"),
    "model.num_heads": Range(low=1, means="attention heads of the tiny preset"),
    "model.intermediate_size": Range(low=1, means="feed-forward width of the tiny preset"),
    "model.max_position_embeddings": Range(low=8, means="positions the tiny preset reads"),
    "model.init_seed": SEED,
    "model.dropout": Range(low=0, high=1, high_open=True, means="a dropout probability"),
    "model.num_kv_heads": Range(low=1, null=True, means="key/value heads"),
    "model.every_k": Range(low=1, null=True, means="keep every k-th teacher layer"),
    "task.max_length": Range(low=8, means="tokens per example (with fewer, little but [CLS] and [SEP] is left)"),
    "task.max_train_samples": Range(low=1, null=True, means="the first N training rows"),
    "task.max_eval_samples": Range(low=1, null=True, means="the first N dev rows"),
    "task.augment": Range(low=0, means="perturbed copies per training row"),
    "task.augment_p": Range(low=0, high=1, low_open=True, high_open=True, means="a per-word probability"),
    "task.augment_seed": SEED,
    "task.unlabelled_rows": Range(low=0, means="training rows after the labelled ones, their labels hidden"),
    "task.block_size": Range(low=2, means="tokens per packed block"),
    "task.prompt_fraction": Range(low=0, high=1, low_open=True, high_open=True, means="a share of each text"),
    "task.max_new_tokens": Range(low=1, means="generated tokens per held-out text"),
    "task.eval_samples": Range(low=1, null=True, means="held-out texts to generate for"),
    **{f"loss.{key}": WEIGHT for key in WEIGHT_KEYS},  # one per term of fadkd/losses/table.py
    # Outside [0.01, 100] the softened distributions are one-hot (the KD term is exactly 0) or uniform, and
    # τ² overflows a float near 1e154: no τ there distils anything.
    "loss.temperature": Range(low=0.01, high=100, means="the softmax temperature τ (typical: 1 to 4)"),
    "loss.dkd_alpha": Range(low=0, means="the weight of DKD's target-class part"),
    "loss.dkd_beta": Range(low=0, means="the weight of DKD's non-target-class part"),
    "loss.contrast_temperature": Range(
        low=0, low_open=True, means="the contrast term's temperature (typical: 0.05 to 1)"
    ),
    "loss.contrast_queue": Range(low=0, means="teacher states kept as extra negatives (0 = none)"),
    "loss.jsd_beta": Range(low=0, high=1, means="the mixing weight of JSD"),
    "loss.relation_heads": Range(low=1, null=True, means="relation heads"),
    "loss.projection_lr": Range(low=0, low_open=True, null=True, means="the projections' learning rate"),
    "loss.intermediate_epochs": Range(low=0, means="epochs of the intermediate-layer stage (feature_schedule=staged)"),
    "loss.feature_until": Range(low=0, high=1, low_open=True, means="a share of the steps"),
    "train.epochs": Range(low=0, means="passes over the training rows"),
    "train.max_steps": Range(low=-1, means="optimizer steps (-1 = use train.epochs)"),
    "train.batch_size": POS,
    "train.eval_batch_size": POS,
    "train.lr": Range(low=0, low_open=True, means="the learning rate (typical: 1e-5 to 1e-3)"),
    "train.weight_decay": Range(low=0, means="AdamW's decoupled weight decay (typical: 0 to 0.1)"),
    "train.warmup_ratio": Range(low=0, high=1, high_open=True, means="a share of the steps"),
    "train.grad_clip": Range(low=0, means="the max gradient norm (0 = no clipping)"),
    "train.eval_every": Range(low=0, means="steps between evaluations (0 = each epoch's end)"),
    "train.log_every": Range(low=1, means="steps between rows of steps.jsonl"),
    "train.seed": SEED,
    "train.num_threads": Range(low=0, means="torch CPU threads (0 = torch's default)"),
    "train.checkpoint_every": Range(low=0, means="steps between checkpoints (0 = at each evaluation)"),
    "train.keep_checkpoints": Range(low=1, means="newest checkpoints kept"),
    "train.max_nonfinite_skips": Range(low=0, means="skipped steps before a run stops"),
    "cache.max_gb": Range(low=0, low_open=True, means="the largest cache written, in GB"),
    "cache.top_k": Range(low=1, means="teacher tokens kept per position (causal LMs)"),
}


def numeric_fields(cls) -> list[tuple[str, bool]]:
    """(field name, is an int) of each int / float field of a schema dataclass."""
    out = []
    for f in dataclasses.fields(cls):
        kinds = {t for t in (int, float) if t is f.type or f"{t.__name__}" in str(f.type).split(" | ")}
        if kinds:
            out.append((f.name, int in kinds))
    return out


def check_value(key: str, rule_key: str, value: Any, is_int: bool, default: Any) -> None:
    """Raise ConfigError when `value` is outside RANGES[rule_key]."""
    rule = RANGES[rule_key]
    if value is None and rule.null:
        return
    if value is None or isinstance(value, bool) or not rule.holds(float(value)):
        example = default if default is not None and rule.holds(float(default)) else rule.low
        raise ConfigError(
            f"{key}={value} is out of range: {rule.means or 'it'} must be {rule.allowed(is_int)}; e.g. {key}={example}"
        )


def check_ranges(cfg) -> None:
    """Every numeric field of a Config (teacher, student, task, loss, train, cache)."""
    sections = {"teacher": "model", "student": "model", "task": "task", "loss": "loss", "train": "train"}
    sections["cache"] = "cache"
    for name, kind in sections.items():
        section = getattr(cfg, name)
        defaults = {f.name: f.default for f in dataclasses.fields(section)}
        for field_name, is_int in numeric_fields(type(section)):
            value = getattr(section, field_name)
            default = defaults[field_name] if not isinstance(defaults[field_name], dataclasses._MISSING_TYPE) else None
            check_value(f"{name}.{field_name}", f"{kind}.{field_name}", value, is_int, default)
