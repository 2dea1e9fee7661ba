"""The fixed sets of words a config field takes, as Enums of the typed schema (fadkd/config/schema.py).

A member's name and value are the word people type (`loss.kd=jsd`), so a member equals its
string (`cfg.loss.kd == "jsd"`), prints as it, and config.yaml holds the word. OmegaConf refuses
any other word while Hydra composes; fadkd/preflight.py checks command-line overrides first, and
`choose` (fadkd/config/checks.py) objects built in code, both with one message.
tests/test_choices.py checks each Enum against the code that dispatches on it.
"""

from enum import Enum


class Choice(str, Enum):
    """A str Enum whose members print as their word (Enum's own str() and format() give 'Class.member')."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def words(cls) -> str:
        """The allowed words as a message says them: 'a or b', 'one of a, b, c'."""
        names = [str(m) for m in cls]
        return " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)


class ModelArch(Choice):
    """model.arch, the tiny presets' architecture (fadkd/models/load.py, fadkd/models/lm.py)."""

    bert = "bert"
    llama = "llama"


class ModelInit(Choice):
    """model.init: random weights (or a path's), layers copied from the teacher (fadkd/models/shrink.py), or the
    teacher pruned in depth and width by importance (fadkd/models/prune.py)."""

    random = "random"
    from_teacher = "from_teacher"
    pruned = "pruned"


class AugmentMethod(Choice):
    """task.augment_method (fadkd/data/augment.py, fadkd/data/lm_augment.py)."""

    eda = "eda"
    lm = "lm"


class MappingStrategy(Choice):
    """mapping.strategy (fadkd/losses/mapping.py; kept: fadkd/models/shrink.py)."""

    uniform = "uniform"
    last = "last"
    explicit = "explicit"
    kept = "kept"


class KDTerm(Choice):
    """loss.kd, the α term (fadkd/losses/kd.py)."""

    forward_kl = "forward_kl"
    reverse_kl = "reverse_kl"
    symmetric_kl = "symmetric_kl"
    jsd = "jsd"
    soft_ce = "soft_ce"
    uld = "uld"
    dkd = "dkd"


class Balance(Choice):
    """loss.balance: fixed weights, or each term rescaled every step to the reference's magnitude or to its
    gradient norm on the shared student representation (fadkd/losses/balance.py)."""

    none = "none"
    magnitude = "magnitude"
    gradnorm = "gradnorm"


class AttnTerm(Choice):
    """loss.attn, the δ term: attention maps, or MiniLMv2 relations (fadkd/losses/relations.py)."""

    maps = "maps"
    relations = "relations"


class Relation(Choice):
    """An entry of loss.relations (attn=relations): query-query, key-key, value-value."""

    qq = "qq"
    kk = "kk"
    vv = "vv"


class ProjectionInit(Choice):
    """loss.projection_init (fadkd/losses/projections.py)."""

    random = "random"
    lstsq = "lstsq"
    channels = "channels"


class FeatureTokens(Choice):
    """loss.feature_tokens: the positions the β and γ terms compare."""

    all = "all"
    first = "first"


class FeatureNorm(Choice):
    """loss.feature_norm: the β and γ terms on raw or per-dimension standardised states."""

    none = "none"
    standardize = "standardize"


class FeatureSchedule(Choice):
    """loss.feature_schedule: the factor on β, γ, δ over training (fadkd/run/step.py)."""

    constant = "constant"
    linear = "linear"
    cosine = "cosine"
    staged = "staged"


class Precision(Choice):
    """train.precision (fadkd/run/step.py)."""

    fp32 = "fp32"
    bf16 = "bf16"


class Strategy(Choice):
    """train.strategy under torchrun (fadkd/run/distributed.py, fadkd/run/sharding.py)."""

    ddp = "ddp"
    fsdp = "fsdp"


class Logger(Choice):
    """train.logger (fadkd/run/logs.py)."""

    jsonl = "jsonl"
    tensorboard = "tensorboard"
    none = "none"


class OnNonfinite(Choice):
    """train.on_nonfinite (fadkd/run/guards.py)."""

    stop = "stop"
    skip = "skip"


class CacheDtype(Choice):
    """cache.dtype of the teacher cache's hidden states and maps (fadkd/teacher/cache.py)."""

    float16 = "float16"
    bfloat16 = "bfloat16"
