"""The typed configuration: dataclasses registered in Hydra's ConfigStore.

YAML files under conf/ hold values; these classes hold types, defaults and field docs.
Hydra merges the YAML into the schema (type-checking every key), and the CLI converts the
result to these objects once with `to_config`. Nothing below the CLI sees a DictConfig.
Validation lives in `__post_init__` and raises ConfigError with a message a user can act on;
the multi-field checks it calls are in fadkd/config/checks.py.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fadkd.config.checks import (
    ConfigError,
    check_augment,
    check_lm_model,
    check_lm_task,
    check_positive,
    check_term_choice,
    check_train_choices,
)
from fadkd.config.ranges import check_ranges


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
    arch: str = "bert"  # tiny presets: bert (classifiers) | llama (causal LMs, fadkd/models/lm.py)
    num_kv_heads: int | None = None  # llama: key/value heads, grouped-query attention (null = num_heads)
    # A student made from the teacher's weights (causal LMs, DistilBERT-style): some of its layers.
    init: str = "random"  # random (path, or the tiny preset above) | from_teacher
    keep_layers: list[int] | None = None  # from_teacher: teacher layers kept, 0-based (model.layers[i])
    every_k: int | None = None  # from_teacher: keep teacher layers 0, k, 2k, ... instead
    # from_teacher: take the kept layers (and embeddings) from this checkpoint of the teacher's architecture
    # (e.g. its pretrained base, as Patient KD does) instead of the teacher itself (null = the teacher)
    layers_from: str | None = None

    def __post_init__(self) -> None:
        check_lm_model(self)
        if self.path is None:
            check_positive(f"model '{self.name}': num_layers", self.num_layers)
            check_positive(f"model '{self.name}': hidden_size", self.hidden_size)
            check_positive(f"model '{self.name}': num_heads", self.num_heads)
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
    # Teacher-labelled augmentation (fadkd/data/augment.py, TinyBERT-style): N perturbed copies of every
    # training row, without hard labels; the teacher's terms use them, the task loss skips them.
    augment: int = 0  # copies per training row (0 = off); an epoch covers the rows and the copies
    augment_p: float = 0.1  # per word: probability of dropping it; also the share of words swapped
    augment_seed: int = 0  # the copies' own seed: every train.seed sees the same rows (one teacher cache)
    augment_method: str = (
        "eda"  # eda (word drop + swap) | lm (words proposed by task.augment_lm, fadkd/data/lm_augment.py)
    )
    augment_lm: str | None = None  # augment_method=lm: a causal LM folder (e.g. the smollm2-135m of `make models`)
    # The unlabelled pool (fadkd/data/pool.py): texts the teacher labels and the task loss never sees.
    unlabelled_rows: int = 0  # N training rows after the first max_train_samples, their labels hidden
    unlabelled_file: str | None = None  # .tsv (header with the task's text columns), .jsonl or .txt texts
    # Causal-LM tasks (lm_<GLUE task>, lm_text; fadkd/data/lm_text.py). max_length cuts held-out texts.
    train_file: str | None = None  # lm_text: .txt (one text per line), .jsonl, or a datasets folder
    eval_file: str | None = None  # lm_text: the held-out texts, same formats
    text_column: str = "text"  # lm_text: the field holding the text in .jsonl / datasets folders
    block_size: int = 128  # tokens per packed block (training and perplexity)
    prompt_fraction: float = 0.5  # generation: share of a held-out text's tokens given as the prompt
    max_new_tokens: int = 32  # generation: greedy continuation length (the reference is cut to it)
    eval_samples: int | None = 200  # generation: the first N held-out texts (null = all)

    def __post_init__(self) -> None:
        check_positive("task.max_length", self.max_length)
        check_lm_task(self)
        check_augment(self)
        if self.data_dir is None and self.name != "lm_text":
            raise ConfigError(
                f"task.data_dir is not set for task '{self.name}': pass task.data_dir=<folder in "
                "the GLUE layout, e.g. ../shared/data/glue>, or task.data_dir=hub to load it from "
                "the Hugging Face Hub"
            )


MAPPING_STRATEGIES = ("uniform", "last", "explicit", "kept")
FEATURE_SCHEDULES = ("constant", "linear", "cosine", "staged")


@dataclass
class MappingConfig:
    """Which student layer learns from which teacher layer (see fadkd/losses/mapping.py)."""

    strategy: str = "uniform"  # uniform | last | explicit | kept (from_teacher students: each kept layer's own output)
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
    # Which α and δ terms (README, "Loss terms"; fadkd/losses/kd.py, fadkd/losses/relations.py).
    kd: str = "forward_kl"  # forward_kl | reverse_kl | symmetric_kl | jsd | soft_ce | uld (tokenizers that differ)
    jsd_beta: float = 0.5  # kd=jsd: mixing weight β in [0, 1] (0 = forward KL, 1 = reverse KL)
    attn: str = "maps"  # maps (MSE of attention maps) | relations (MiniLMv2 Q/K/V relations, KL)
    relation_heads: int | None = None  # attn=relations: relation heads (null = the teacher's attention heads)
    relations: list[str] = field(default_factory=lambda: ["qq", "kk", "vv"])  # attn=relations: which ones
    # The learned projections P_l where widths differ (fadkd/losses/projections.py).
    projection_init: str = "random"  # random | lstsq (ridge least squares on the first batch, before step 1)
    projection_lr: float | None = None  # the projections' learning rate (null = train.lr)
    # Which positions the β and γ terms compare: all real tokens, or only the first one (the
    # [CLS] / <s> token a sequence classifier reads, as in Patient KD); the δ term always uses all.
    feature_tokens: str = "all"  # all | first
    # standardize: β and γ compare teacher states standardised per dimension (mean and std of each
    # teacher layer's dimensions, measured on the first batch) and the projected student states put
    # through the same affine map, so no few large-magnitude dimensions dominate the terms.
    feature_norm: str = "none"  # none | standardize
    # Feature terms as a warm start: β, γ, δ (and relations) scaled by a factor that falls from 1 to 0
    # over the first `feature_until` share of the optimizer steps, then stays 0 (α and ce untouched).
    feature_schedule: str = "constant"  # constant | linear | cosine | staged
    feature_until: float = 1.0  # share of the steps at which a decaying schedule reaches 0, in (0, 1]
    # staged (TinyBERT's order): `intermediate_epochs` epochs of β, γ, δ alone, then train.epochs (or
    # train.max_steps) of α and ce alone, each stage with its own warmup and linear decay.
    intermediate_epochs: int = 0

    def __post_init__(self) -> None:
        check_term_choice(self)
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
        if self.projection_init not in ("random", "lstsq"):
            raise ConfigError(f"loss.projection_init={self.projection_init!r} is not one of random, lstsq")
        if self.feature_tokens not in ("all", "first"):
            raise ConfigError(f"loss.feature_tokens={self.feature_tokens!r} is not one of all, first")
        if self.feature_norm not in ("none", "standardize"):
            raise ConfigError(f"loss.feature_norm={self.feature_norm!r} is not one of none, standardize")
        if self.feature_schedule not in FEATURE_SCHEDULES:
            raise ConfigError(
                f"loss.feature_schedule={self.feature_schedule!r} is not one of {', '.join(FEATURE_SCHEDULES)}"
            )
        staged = self.feature_schedule == "staged"
        if staged != (self.intermediate_epochs > 0) or self.intermediate_epochs < 0:
            raise ConfigError(
                f"loss.feature_schedule={self.feature_schedule} with loss.intermediate_epochs="
                f"{self.intermediate_epochs}: the intermediate-layer stage's epochs (>= 1) go with "
                "feature_schedule=staged only"
            )
        if staged and not (self.needs_features and (self.alpha > 0 or self.ce > 0)):
            raise ConfigError(
                "loss.feature_schedule=staged trains β, γ, δ first, then α and ce: set some of beta, gamma, delta "
                "and some of alpha, ce above 0"
            )
        if not 0 < self.feature_until <= 1:
            raise ConfigError(f"loss.feature_until={self.feature_until} must be in (0, 1]: a share of the steps")
        if self.projection_lr is not None and not self.projection_lr > 0:
            raise ConfigError(f"loss.projection_lr={self.projection_lr} must be > 0, or null to use train.lr")

    @property
    def needs_features(self) -> bool:
        """True when any term compares hidden states or attention maps position by position."""
        return self.beta > 0 or self.gamma > 0 or self.delta > 0


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
    precision: str = "fp32"  # fp32 | bf16 (autocast for the forwards; loss terms in fp32)
    compile: bool = False  # torch.compile the student's forward (worth it on GPUs)
    logger: str = "jsonl"  # jsonl (steps.jsonl, evals.jsonl) | tensorboard (those + events) | none
    checkpoint_every: int = 0  # write a checkpoint every N steps (0 = at each evaluation only)
    keep_checkpoints: int = 2  # newest checkpoints kept
    # true: continue from the newest complete checkpoint in the run folder (refused when the settings
    # differ from the run's config.yaml); force: continue even so. Typed Any to allow the word.
    resume: Any = False
    overwrite: bool = False  # reuse a run folder that holds another run, deleting its files
    on_nonfinite: str = "stop"  # NaN/inf loss or gradient: stop (checkpoint of the last good state) | skip
    max_nonfinite_skips: int = 10  # with on_nonfinite=skip: stop after this many skipped steps

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision='{self.precision}' is unknown; choose fp32 or bf16")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"train.on_nonfinite='{self.on_nonfinite}' is unknown; choose stop or skip")
        if self.logger not in ("jsonl", "tensorboard", "none"):
            raise ConfigError(f"train.logger='{self.logger}' is unknown; choose jsonl, tensorboard or none")
        check_train_choices(self)
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


CACHE_DTYPES = ("float16", "bfloat16")


@dataclass
class CacheConfig:
    """The teacher-output cache (fadkd/teacher/cache.py): the teacher runs once, later epochs and runs read."""

    enabled: bool = False
    dir: str = "~/.cache/fadkd-teacher"  # one folder per key below it (conf sets $FADKD_CACHE)
    path: str | None = None  # an explicit cache folder (refused if built for something else)
    max_gb: float = 50.0  # refuse to write a cache estimated larger than this
    dtype: str = "float16"  # float16 | bfloat16: hidden states and maps; logits stay float32
    # Causal LMs (fadkd/teacher/lm_cache.py): per token the teacher's top_k most likely tokens (log-probabilities
    # at loss.temperature) and the mass of the rest as one bucket; k >= the vocabulary keeps all of it.
    top_k: int = 64

    def __post_init__(self) -> None:
        if self.dtype not in CACHE_DTYPES:
            raise ConfigError(f"cache.dtype='{self.dtype}' is unknown; choose float16 or bfloat16")
        if self.max_gb <= 0:
            raise ConfigError(f"cache.max_gb={self.max_gb} must be > 0")
        check_positive("cache.top_k", self.top_k)


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
        lm = self.task.name.strip().lower().startswith("lm_")
        t = self.task
        unlabelled = [f"{k}={v}" for k, v in (("task.augment", t.augment), ("task.unlabelled_rows", t.unlabelled_rows),
                      ("task.unlabelled_file", t.unlabelled_file)) if v]  # fmt: skip
        if unlabelled and not (self.loss.alpha > 0 or self.loss.needs_features):
            raise ConfigError(
                f"{unlabelled[0]} adds rows without hard labels, which only a teacher term can "
                "learn from; set loss.alpha (or beta, gamma, delta) above 0, or leave them out"
            )
        for role, model in (("teacher", self.teacher), ("student", self.student)):
            if not lm and model.path is None and model.arch == "llama":
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
