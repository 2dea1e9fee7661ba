"""The mapping and loss sections of the typed config (fadkd/config/schema.py), with their checks."""

from dataclasses import dataclass, field
from typing import Any

from fadkd.config.checks import ConfigError, choose
from fadkd.config.choices import (
    AttnTerm,
    Balance,
    FeatureNorm,
    FeatureSchedule,
    FeatureTokens,
    KDTerm,
    MappingStrategy,
    ProjectionInit,
    Relation,
)
from fadkd.losses.table import WEIGHT_KEYS as WEIGHTS  # the terms' weights: fadkd/losses/table.py
from fadkd.losses.table import layerwise


@dataclass
class MappingConfig:
    """Which student layer learns from which teacher layer (see fadkd/losses/mapping.py)."""

    strategy: MappingStrategy = MappingStrategy.uniform  # uniform | last | explicit | kept (from_teacher students)
    pairs: list[Any] | None = None  # explicit only: [[student, teacher], ...], 1-based
    layer_weights: list[float] | None = None  # λ per pair (default 1.0 each)
    include_embeddings: bool = False  # also align the embedding outputs (layer 0 <-> 0)

    def __post_init__(self) -> None:
        self.strategy = choose(MappingStrategy, "mapping.strategy", self.strategy)
        if self.pairs is not None and self.strategy != MappingStrategy.explicit:
            raise ConfigError(
                f"mapping.pairs={list(self.pairs)} is set but mapping.strategy={self.strategy} ignores it; add "
                "mapping=explicit to use these pairs, or leave mapping.pairs out"
            )


def check_weights(values: dict[str, float]) -> None:
    """The one check of the objective's weights and τ: the config's, and LossWeights' built in code.

    NaN and infinity are left to the ranges (fadkd/config/ranges.py), which name the allowed range.
    """
    for key in WEIGHTS:
        if values[key] < 0:
            raise ConfigError(f"loss.{key}={values[key]} is negative; loss weights must be >= 0")
    if not any(values[key] for key in WEIGHTS):
        raise ConfigError(
            "every loss weight is 0, so there is nothing to train: set at least one of "
            f"{', '.join(f'loss.{key}' for key in WEIGHTS)} above 0"
        )
    if values["temperature"] <= 0:
        raise ConfigError(f"loss.temperature={values['temperature']} must be > 0 (typical: 1 to 4)")


@dataclass
class LossConfig:
    """Weights of the objective L = α·KD + β·cos + γ·mse + δ·attn + contrast·InfoNCE + ce·task (the terms:
    fadkd/losses/table.py)."""

    alpha: float = 1.0  # KL(teacher ‖ student) on logits softened by temperature, times τ²
    temperature: float = 2.0  # τ
    beta: float = 1.0  # 1 − cos of mapped hidden states
    gamma: float = 1.0  # MSE of mapped hidden states
    delta: float = 1.0  # MSE of mapped attention maps (from fadkd's attention function on the mapped layers)
    contrast: float = 0.0  # InfoNCE of mean-pooled, projected student states against the batch's teacher states
    ce: float = 1.0  # the task's own loss on hard labels
    shared_projection: bool = False  # one Linear for every pair instead of one per pair
    # Which α and δ terms (README, "Loss terms"; fadkd/losses/kd.py, fadkd/losses/relations.py).
    kd: KDTerm = KDTerm.forward_kl  # forward_kl | reverse_kl | symmetric_kl | jsd | soft_ce | uld | dkd
    jsd_beta: float = 0.5  # kd=jsd: mixing weight β in [0, 1] (0 = forward KL, 1 = reverse KL)
    dkd_alpha: float = 1.0  # kd=dkd: weight of the target-class part (TCKD, binary target vs rest)
    dkd_beta: float = 8.0  # kd=dkd: weight of the non-target-class part (NCKD; Zhao et al.'s CIFAR-100 value)
    contrast_temperature: float = 0.1  # contrast: τ_c of the cosine similarities
    contrast_queue: int = 0  # contrast: earlier batches' teacher states kept as extra negatives (0 = in-batch only)
    # Term weights as set (none), or every term that is on rescaled each step to the task loss's (KD's
    # without ce) magnitude (magnitude; ModelOpt's balancer) or gradient norm on the deepest student
    # representation all terms share (gradnorm; GradNorm, Chen et al. 2018), the factors detached and logged.
    balance: Balance = Balance.none  # none | magnitude | gradnorm
    attn: AttnTerm = AttnTerm.maps  # maps (MSE of attention maps) | relations (MiniLMv2 Q/K/V relations, KL)
    relation_heads: int | None = None  # attn=relations: relation heads (null = the teacher's attention heads)
    relations: list[str] = field(default_factory=lambda: ["qq", "kk", "vv"])  # attn=relations: which ones
    # The learned projections P_l where widths differ (fadkd/losses/projections.py).
    projection_init: ProjectionInit = (
        ProjectionInit.random
    )  # random | lstsq (ridge least squares, first batch) | channels (pruned students)
    projection_lr: float | None = None  # the projections' learning rate (null = train.lr)
    # Which positions the β and γ terms compare: all real tokens, or only the first one (the
    # [CLS] / <s> token a sequence classifier reads, as in Patient KD); the δ term always uses all.
    feature_tokens: FeatureTokens = FeatureTokens.all  # all | first
    # standardize: β and γ compare teacher states standardised per dimension (mean and std of each
    # teacher layer's dimensions, measured on the first batch) and the projected student states put
    # through the same affine map, so no few large-magnitude dimensions dominate the terms.
    feature_norm: FeatureNorm = FeatureNorm.none  # none | standardize
    # Feature terms as a warm start: β, γ, δ (and relations) scaled by a factor that falls from 1 to 0
    # over the first `feature_until` share of the optimizer steps, then stays 0 (α and ce untouched).
    feature_schedule: FeatureSchedule = FeatureSchedule.constant  # constant | linear | cosine | staged
    feature_until: float = 1.0  # share of the steps at which a decaying schedule reaches 0, in (0, 1]
    # staged (TinyBERT's order): `intermediate_epochs` epochs of β, γ, δ alone, then train.epochs (or
    # train.max_steps) of α and ce alone, each stage with its own warmup and linear decay.
    intermediate_epochs: int = 0

    def __post_init__(self) -> None:
        _check_terms(self)
        check_weights({key: getattr(self, key) for key in (*WEIGHTS, "temperature")})
        self.projection_init = choose(ProjectionInit, "loss.projection_init", self.projection_init)
        self.feature_tokens = choose(FeatureTokens, "loss.feature_tokens", self.feature_tokens)
        self.feature_norm = choose(FeatureNorm, "loss.feature_norm", self.feature_norm)
        self.feature_schedule = choose(FeatureSchedule, "loss.feature_schedule", self.feature_schedule)
        _check_schedule(self)
        self.balance = choose(Balance, "loss.balance", self.balance)
        if self.balance != Balance.none and not (self.ce > 0 or self.alpha > 0):
            raise ConfigError(
                f"loss.balance={self.balance} rescales every term to the task loss (ce) or KD (alpha): set one of "
                "them above 0, or loss.balance=none"
            )
        if self.projection_lr is not None and not self.projection_lr > 0:
            raise ConfigError(f"loss.projection_lr={self.projection_lr} must be > 0, or null to use train.lr")

    @property
    def layerwise(self) -> bool:
        """True when any term reads the mapped layers (fadkd/losses/table.py has the one rule)."""
        return layerwise(self)


def _check_terms(cfg: LossConfig) -> None:
    """loss.kd, loss.jsd_beta, loss.attn, loss.relation_heads and loss.relations."""
    cfg.kd = choose(KDTerm, "loss.kd", cfg.kd)
    if not 0 <= cfg.jsd_beta <= 1:
        raise ConfigError(
            f"loss.jsd_beta={cfg.jsd_beta} must be in [0, 1] (the teacher's share of the mixture; 0.5 = symmetric JSD)"
        )
    cfg.attn = choose(AttnTerm, "loss.attn", cfg.attn)
    if cfg.relation_heads is not None and cfg.relation_heads <= 0:
        raise ConfigError(f"loss.relation_heads={cfg.relation_heads} must be a positive integer (or null)")
    chosen, known = list(cfg.relations), [str(r) for r in Relation]
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(known):
        raise ConfigError(
            f"loss.relations={chosen} must list some of {', '.join(known)}, each once, e.g. [{','.join(known)}]"
        )


def _check_schedule(cfg: LossConfig) -> None:
    """loss.feature_schedule with loss.intermediate_epochs and loss.feature_until."""
    staged = cfg.feature_schedule == FeatureSchedule.staged
    if staged != (cfg.intermediate_epochs > 0) or cfg.intermediate_epochs < 0:
        raise ConfigError(
            f"loss.feature_schedule={cfg.feature_schedule} with loss.intermediate_epochs="
            f"{cfg.intermediate_epochs}: the intermediate-layer stage's epochs (>= 1) go with "
            "feature_schedule=staged only"
        )
    if staged and not (cfg.layerwise and (cfg.alpha > 0 or cfg.ce > 0)):
        raise ConfigError(
            "loss.feature_schedule=staged trains β, γ, δ first, then α and ce: set some of beta, gamma, delta, "
            "contrast and some of alpha, ce above 0"
        )
    if not 0 < cfg.feature_until <= 1:
        raise ConfigError(f"loss.feature_until={cfg.feature_until} must be in (0, 1]: a share of the steps")
