"""The one table of loss terms: a record per term of the objective, and the rules that read it.

Everything that names a term derives from `TERMS`: the weights (LossWeights, fadkd/losses/distill.py),
the config's weight list and ranges (fadkd/config/loss.py, fadkd/config/ranges.py), the rule "a
feature term is on" (`layerwise`), what the teacher and its cache must return (fadkd/losses/spec.py),
the logged names (fadkd/run/logs.py), the messages on non-finite values (fadkd/run/guards.py), the plots
(fadkd/report/plots.py) and the printed formula (DistillLoss.__str__). DistillLoss refuses to add a
term that has no record here (tests/test_term_table.py checks it).

This module imports no torch (the config and `fadkd --help` read it): a record names its pure function
as "<module in fadkd/losses>.<function>", and fadkd/losses/distill.py binds those names (FUNCTIONS),
checking at import that every record's function exists.

A new term is: its pure function, its record here, its weight field in LossConfig (with its doc line,
which `fadkd train --help` prints) and a YAML line; the objective's forward then computes it.
"""

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """One term of L: weight × value, summed over layer pairs (λ-weighted) for the layer terms."""

    name: str  # its key in the terms dict and steps.jsonl ("cos"; per layer pair "cos/s2_t4")
    weight: str  # its weight's config key, loss.<weight>
    label: str  # its name in the printed formula (the α and δ terms' labels depend on loss.kd / loss.attn)
    title: str  # its name in plots and messages
    reads: str  # what it compares: logits | hidden | attentions (maps, or query/key/value) | labels
    teacher: bool  # whether it reads the teacher
    layers: str  # "" (no layer mapping), "mapped" (every pair), "transformer" (pairs without layer 0)
    positional: bool  # compares position by position: both models' tokens must line up
    fn: str  # its pure function, "<module>.<function>" in fadkd/losses
    default: float  # its weight when LossWeights is built in code (the config's defaults are LossConfig's)
    color: str  # its colour in every plot

    @property
    def stage(self) -> str:
        """Which factor of loss.feature_schedule multiplies it: "feature" (layer terms) or "prediction"."""
        return "feature" if self.layers else "prediction"


TERMS: tuple[Term, ...] = (
    Term("kd", "alpha", "KL", "kd (logits)", "logits", True, "", False, "kd.kd_term", 1.0, "tab:blue"),
    Term("cos", "beta", "cos", "cos (1−cos)", "hidden", True, "mapped", True, "terms.cosine_rows", 0.0, "tab:orange"),
    Term("mse", "gamma", "mse", "mse (hidden)", "hidden", True, "mapped", True, "terms.mse_rows", 0.0, "tab:green"),
    Term(
        "attn",
        "delta",
        "attn",
        "attn (maps)",
        "attentions",
        True,
        "transformer",
        True,
        "terms.attention_loss",
        0.0,
        "tab:red",
    ),  # fmt: skip
    Term(
        "contrast",
        "contrast",
        "contrast",
        "contrast (InfoNCE)",
        "hidden",
        True,
        "mapped",
        False,
        "contrast.contrastive_loss",
        0.0,
        "tab:brown",
    ),  # fmt: skip
    Term("ce", "ce", "ce", "ce (task)", "labels", False, "", False, "terms.task_loss", 1.0, "tab:purple"),
)
BY_NAME: dict[str, Term] = {t.name: t for t in TERMS}
WEIGHT_KEYS: tuple[str, ...] = tuple(t.weight for t in TERMS)


def active(values: Mapping[str, float] | object) -> tuple[Term, ...]:
    """The terms whose weight is > 0, in the table's order; `values` maps weight keys to weights, or has them
    as attributes (LossConfig, LossWeights)."""
    get = values.get if isinstance(values, Mapping) else lambda key, default: getattr(values, key, default)
    return tuple(t for t in TERMS if get(t.weight, 0.0) > 0)


def layerwise(values) -> bool:
    """The one rule "a feature term is on": some term on reads the mapped layers (β, γ, δ, contrast)."""
    return any(t.layers for t in active(values))


def positional(values) -> bool:
    """Some term on compares position by position, so both models' token masks must be the same."""
    return any(t.positional for t in active(values))


def reads(values, what: str) -> bool:
    """Some term on reads `what` (hidden | attentions | logits | labels) of the mapped layers / outputs."""
    return any(t.reads == what for t in active(values))


def uses_teacher(values) -> bool:
    """Some term on reads the teacher."""
    return any(t.teacher for t in active(values))


def feature_weights() -> str:
    """ "beta, gamma, delta, contrast": the layer terms' weight keys, for messages."""
    return ", ".join(t.weight for t in TERMS if t.layers)
