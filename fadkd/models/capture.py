"""Normalise a model's forward pass into one small record that the losses read.

No loss code knows a model class: everything goes through `run_model`, which keeps only
the hidden states and attention maps (or, for relations, the query/key/value) of the mapped
layers (index convention: see
fadkd/losses/mapping.py; hidden[0] is the embedding output, hidden[i] / attentions[i] belong to
transformer layer i, 1-based).
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from fadkd.errors import FadkdError
from fadkd.models import attention


@dataclass
class Outputs:
    logits: Tensor | None  # [B, C] (sequence classification) or [B, L, V] (causal LM); None: see topk
    hidden: dict[int, Tensor]  # layer index -> [B, L, H]; 0 = embedding output
    attentions: dict[int, Tensor]  # layer index (1-based) -> [B, heads, L, L] probabilities
    mask: Tensor  # [B, L] attention mask, 1 = real token
    # layer index (1-based) -> (query, key, value), each [B, query heads, L, head dim] (loss.attn=relations)
    qkv: dict[int, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    topk: object | None = None  # a causal-LM teacher read from its cache: kd_terms.TopK instead of logits


def run_model(model: torch.nn.Module, inputs: dict[str, Tensor], layers: "Layers") -> Outputs:
    """Forward `model` on tokenized `inputs`, keeping only the requested layers."""
    hidden_layers, attention_layers = layers.hidden, layers.attentions
    recording = getattr(model.config, "_attn_implementation", None) == attention.NAME
    hooked = bool(layers.qkv) and not recording  # no attention interface (MPNet): hooks on q/k/v projections
    if hooked and not layers.qkv <= set(attention.projection_modules(model)):
        raise FadkdError(
            f"{type(model).__name__} does not run fadkd's attention function and has no query/key/value "
            "projections fadkd can hook, so its query/key/value cannot be captured; attention relations "
            "(loss.attn=relations) need a model with transformers' attention interface (BERT, Llama, ...) or "
            "BERT-like q/k/v layers (MPNet): use loss.attn=maps for this model"
        )
    if recording:  # maps from the flagged layers only; SDPA elsewhere
        attention.record_layers(model, attention_layers, layers.qkv)
    with attention.capture_projections(model, layers.qkv if hooked else frozenset()) as projected:
        out = model(
            **inputs,
            output_hidden_states=bool(hidden_layers),
            output_attentions=bool(attention_layers) and not recording,
        )
    hidden = {i: out.hidden_states[i] for i in hidden_layers} if hidden_layers else {}
    attentions = {}
    if recording:
        attentions = attention.recorded(model, attention_layers)
        missing = sorted(attention_layers - set(attentions))
        if missing:
            raise FadkdError(f"{type(model).__name__} recorded no attention maps for layers {missing}")
    elif attention_layers:
        maps = out.attentions or ()
        if len(maps) == 0 or any(maps[i - 1] is None for i in attention_layers):
            # SDPA / flash attention return no probabilities; an empty attention loss would
            # silently train nothing, so refuse.
            impl = getattr(model.config, "_attn_implementation", "?")
            raise FadkdError(
                f"{type(model).__name__} returned no attention maps (attention implementation "
                f"'{impl}'); attention alignment (loss.delta > 0) needs the maps: fadkd loads "
                "models with its own attention function ('fadkd') or eager attention when "
                "loss.delta > 0; if this model supports neither, set loss.delta=0"
            )
        attentions = {i: maps[i - 1] for i in attention_layers}
    qkv = {i: tuple(x) for i, x in projected.items()} if hooked else {}
    if recording and layers.qkv:
        qkv = attention.recorded_qkv(model, layers.qkv)
    if set(qkv) != set(layers.qkv):
        missing = sorted(layers.qkv - set(qkv))
        raise FadkdError(f"{type(model).__name__} recorded no query/key/value for layers {missing}")
    return Outputs(logits=out.logits, hidden=hidden, attentions=attentions, mask=inputs["attention_mask"], qkv=qkv)


@dataclass(frozen=True)
class Layers:
    """Which layers one model must expose for the loss terms."""

    hidden: frozenset[int] = frozenset()
    attentions: frozenset[int] = frozenset()
    qkv: frozenset[int] = frozenset()  # query/key/value for attention relations


def layers_to_capture(pairs, features: bool, attention: bool, relations: bool = False) -> tuple[Layers, Layers]:
    """(student, teacher) layers the terms read: hidden states for cos/mse, maps (or Q/K/V) for attn.

    Layer 0 (embeddings) has no attention, so pairs touching it feed hidden terms only. With
    `relations` the attention term reads query/key/value instead of maps.
    """
    with_attn = [p for p in pairs if p.student > 0 and p.teacher > 0] if attention else []
    with_maps, with_qkv = ([], with_attn) if relations else (with_attn, [])
    hidden = pairs if features else []

    def side(role: str) -> Layers:
        def pick(chosen):
            return frozenset(getattr(p, role) for p in chosen)

        return Layers(pick(hidden), pick(with_maps), pick(with_qkv))

    return side("student"), side("teacher")
