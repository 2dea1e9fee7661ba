"""The train and cache sections of the typed config (fadkd/config/schema.py), with their checks."""

import re
from dataclasses import dataclass
from typing import Any

from fadkd.config.checks import ConfigError, check_positive, choose
from fadkd.config.choices import CacheDtype, Logger, OnNonfinite, Precision, Strategy


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = 10
    max_steps: int = -1  # > 0 stops after this many optimizer steps (overrides epochs); 0 = evaluate only
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    fused_adamw: bool = True  # AdamW's fused kernel on CPU / CUDA (same update, much faster)
    warmup_ratio: float = 0.1  # share of steps with linear warmup, then linear decay to 0
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    eval_every: int = 0  # evaluate on dev every N steps (0 = at the end of each epoch only)
    log_every: int = 10  # write a row to steps.jsonl every N steps
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    num_threads: int = 0  # torch CPU threads (0 = torch's default)
    save_student: bool = True  # save the best student as a Hugging Face folder
    group_by_length: bool = False  # batches of similar length (less padding), still shuffled
    precision: Precision = Precision.fp32  # fp32 | bf16 (autocast for the forwards; loss terms in fp32)
    compile: bool = False  # torch.compile the student's forward (worth it on GPUs)
    # under torchrun: ddp (every rank a full copy, gradients averaged) | fsdp (FSDP2: student, projections,
    # optimizer state and teacher sharded over the ranks; with bf16, bf16 parameters and fp32 reduction)
    strategy: Strategy = Strategy.ddp
    logger: Logger = Logger.jsonl  # jsonl (steps.jsonl, evals.jsonl) | tensorboard (those + events) | none
    checkpoint_every: int = 0  # write a checkpoint every N steps (0 = at each evaluation only)
    keep_checkpoints: int = 2  # newest checkpoints kept
    # true: continue from the newest complete checkpoint in the run folder (refused when the settings
    # differ from the run's config.yaml); force: continue even so. Typed Any to allow the word.
    resume: Any = False
    overwrite: bool = False  # reuse a run folder that holds another run, deleting its files
    on_nonfinite: OnNonfinite = OnNonfinite.stop  # NaN/inf loss or gradient: stop (last good state checkpointed) | skip
    max_nonfinite_skips: int = 10  # with on_nonfinite=skip: stop after this many skipped steps

    def __post_init__(self) -> None:
        self.precision = choose(Precision, "train.precision", self.precision)
        self.on_nonfinite = choose(OnNonfinite, "train.on_nonfinite", self.on_nonfinite)
        self.logger = choose(Logger, "train.logger", self.logger)
        self.strategy = choose(Strategy, "train.strategy", self.strategy)
        _check_device(self.device)
        self.resume = _resume(self.resume)
        if self.resume and self.overwrite:
            raise ConfigError("train.resume=true and train.overwrite=true contradict each other; pick one")
        check_positive("train.batch_size", self.batch_size)
        check_positive("train.eval_batch_size", self.eval_batch_size)
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0 (typical: 1e-5 to 1e-3)")
        if self.epochs < 1 and self.max_steps < 0:
            raise ConfigError("train.epochs must be >= 1 unless train.max_steps >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio={self.warmup_ratio} must be in [0, 1)")


def _check_device(device: Any) -> None:
    """train.device's form; whether that device is there is checked when the run starts."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(
            f"train.device={device!r} is not a device fadkd knows; choose auto, cpu, cuda, cuda:N (N = GPU "
            "number) or mps, e.g. train.device=cpu"
        )


def _resume(value: Any) -> bool | str:
    """train.resume as True, False or "force" (the words true / false / force accepted)."""
    resume = value
    if isinstance(resume, str):
        resume = {"true": True, "false": False, "force": "force"}.get(resume.strip().lower(), resume)
    if not (isinstance(resume, bool) or resume == "force"):
        raise ConfigError(
            f"train.resume={value!r} is not one of true, false, force: true continues the run in the folder, "
            "force continues it even with settings that differ from its config.yaml"
        )
    return resume


@dataclass
class CacheConfig:
    """The teacher-output cache (fadkd/teacher/cache.py): the teacher runs once, later epochs and runs read."""

    enabled: bool = False
    dir: str = "~/.cache/fadkd-teacher"  # one folder per key below it (conf sets $FADKD_CACHE)
    path: str | None = None  # an explicit cache folder (refused if built for something else)
    max_gb: float = 50.0  # refuse to write a cache estimated larger than this
    dtype: CacheDtype = CacheDtype.float16  # float16 | bfloat16: hidden states and maps; logits stay float32
    # Causal LMs (fadkd/teacher/lm_cache.py): per token the teacher's top_k most likely tokens (log-probabilities
    # at loss.temperature) and the mass of the rest as one bucket; k >= the vocabulary keeps all of it.
    top_k: int = 64

    def __post_init__(self) -> None:
        self.dtype = choose(CacheDtype, "cache.dtype", self.dtype)
        if self.max_gb <= 0:
            raise ConfigError(f"cache.max_gb={self.max_gb} must be > 0")
        check_positive("cache.top_k", self.top_k)
