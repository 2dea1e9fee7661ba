"""The loss specification: which terms are on, which layers they read, what the teacher must return.

Built once from the config (`build_spec`) when both models' depths are known, then handed to whoever
needs it: the objective (fadkd/losses/distill.py), the teacher (which layers to keep or cache), the
loop (the per-step factors of loss.feature_schedule, passed into each loss call). Nothing else
re-derives these rules from the config.
"""

import math
from dataclasses import dataclass, replace

from fadkd.config.schema import Config
from fadkd.errors import FadkdError
from fadkd.losses.balance import shared_layer
from fadkd.losses.distill import LossWeights
from fadkd.losses.kd import TermChoice
from fadkd.losses.mapping import LayerPair, build_mapping
from fadkd.losses.table import WEIGHT_KEYS, reads
from fadkd.losses.table import uses_teacher as reads_teacher
from fadkd.models.capture import Layers, layers_to_capture
from fadkd.models.shrink import kept_pairs

WEIGHTS = (*WEIGHT_KEYS, "temperature", "contrast_temperature", "contrast_queue", "balance")  # LossWeights


def feature_scale(schedule: str, until: float, step: int, total_steps: int, stage1_steps: int = 0) -> float:
    """The factor on β, γ, δ before optimizer step `step` (0-based) of `total_steps`.

    constant: 1. linear / cosine: falls from 1 at step 0 to 0 at `until` × total_steps, then 0
    (the feature terms as a warm start; the logit and task terms carry the rest of training).
    staged: 1 for the first `stage1_steps` (the intermediate-layer stage), then 0.
    """
    if schedule == "staged":
        return 1.0 if step < stage1_steps else 0.0
    if schedule == "constant" or total_steps <= 0:
        return 1.0
    progress = min(step / (until * total_steps), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise FadkdError(f"feature schedule {schedule!r} is not one of constant, linear, cosine")


def prediction_scale(schedule: str, step: int, stage1_steps: int) -> float:
    """The factor on α and ce: 0 during the intermediate-layer stage of loss.feature_schedule=staged, else 1."""
    return 0.0 if schedule == "staged" and step < stage1_steps else 1.0


def uses_teacher(cfg: Config) -> bool:
    """Whether any term reads the teacher (known before any model is loaded)."""
    return reads_teacher(cfg.loss)


def records_attention(cfg: Config) -> bool:
    """Whether the models run fadkd's attention function (δ reads maps or query/key/value)."""
    return reads(cfg.loss, "attentions")


@dataclass(frozen=True)
class LossSpec:
    weights: LossWeights
    choice: TermChoice  # which α and δ terms (fadkd/losses/kd.py)
    pairs: tuple[LayerPair, ...]  # the layer mapping; empty without feature terms
    student_layers: Layers  # what the student's forward must keep
    teacher_layers: Layers  # what the teacher must return (live, or read from its cache)
    schedule: str  # loss.feature_schedule
    until: float  # loss.feature_until
    intermediate_epochs: int  # staged: epochs of β, γ, δ alone before α and ce

    @property
    def features(self) -> bool:
        """Some term reads the hidden states of the mapped layers (β, γ, contrast)."""
        return reads(self.weights, "hidden")

    @property
    def attention(self) -> bool:
        """Some term reads the mapped layers' attention maps or query/key/value (δ)."""
        return reads(self.weights, "attentions")

    @property
    def layerwise(self) -> bool:
        """Any hidden-state or attention term: positions must line up between the models."""
        return self.weights.layerwise

    @property
    def cached_layers(self) -> Layers:
        """What a teacher cache stores: every mapped layer's states and maps, so runs that differ only in
        loss weights share one cache."""
        return layers_to_capture(self.pairs, True, True)[1] if self.pairs else Layers()

    def scales(self, step: int, total_steps: int, stage1_steps: int) -> tuple[float, float]:
        """(factor on β, γ, δ; factor on α, ce) before optimizer step `step` (fadkd/run/step.py)."""
        return (
            feature_scale(self.schedule, self.until, step, total_steps, stage1_steps),
            prediction_scale(self.schedule, step, stage1_steps),
        )

    def describe_schedule(self) -> str | None:
        """One line on the feature schedule for the run's start, or None when there is nothing to say."""
        if self.schedule == "staged":
            return f"staged: {self.intermediate_epochs} epoch(s) of β, γ, δ alone, then α and ce alone"
        if self.schedule != "constant" and self.layerwise:
            return f"β, γ, δ × a {self.schedule} decay from 1 to 0 over the first {self.until:.0%} of the steps"
        return None


def build_spec(cfg: Config, student_depth: int, teacher_shape: dict | None, kd_vocab: int | None = None) -> LossSpec:
    """The spec for this run: weights, term choices, mapping, and the layers each model must expose."""
    loss, m = cfg.loss, cfg.mapping
    weights = LossWeights(**{k: getattr(loss, k) for k in WEIGHTS})
    pairs: list[LayerPair] = []
    if weights.layerwise:
        strategy, explicit = ("explicit", kept_pairs(cfg)) if m.strategy == "kept" else (m.strategy, m.pairs)
        pairs = build_mapping(
            strategy, student_depth, teacher_shape["layers"], explicit, m.layer_weights, m.include_embeddings
        )
    relations = loss.attn == "relations"
    features, attention = reads(weights, "hidden"), reads(weights, "attentions")
    student_layers, teacher_layers = layers_to_capture(pairs, features, attention, relations)
    shared = shared_layer(weights, [p for p in pairs if p.weight > 0]) if weights.balance == "gradnorm" else None
    if shared is not None:  # gradnorm's z (fadkd/losses/balance.py) is a student hidden state
        student_layers = replace(student_layers, hidden=student_layers.hidden | {shared})
    return LossSpec(
        weights=weights,
        choice=TermChoice.from_config(loss, (teacher_shape or {}).get("heads"), kd_vocab),
        pairs=tuple(pairs),
        student_layers=student_layers,
        teacher_layers=teacher_layers,
        schedule=loss.feature_schedule,
        until=loss.feature_until,
        intermediate_epochs=loss.intermediate_epochs,
    )
