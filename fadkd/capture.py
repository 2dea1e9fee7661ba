"""Normalise a model's forward pass into one small record that the losses read.

No loss code knows a model class: everything goes through `run_model`, which keeps only
the hidden states and attention maps of the mapped layers (index convention: see
fadkd/mapping.py; hidden[0] is the embedding output, hidden[i] / attentions[i] belong to
transformer layer i, 1-based).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from fadkd import attention
from fadkd.errors import FadkdError


@dataclass
class Outputs:
    logits: Tensor  # [B, C] (sequence classification) or [B, L, V] (causal LM)
    hidden: dict[int, Tensor]  # layer index -> [B, L, H]; 0 = embedding output
    attentions: dict[int, Tensor]  # layer index (1-based) -> [B, heads, L, L] probabilities
    mask: Tensor  # [B, L] attention mask, 1 = real token


def run_model(model: torch.nn.Module, inputs: dict[str, Tensor], layers: "Layers") -> Outputs:
    """Forward `model` on tokenized `inputs`, keeping only the requested layers."""
    hidden_layers, attention_layers = layers.hidden, layers.attentions
    recording = getattr(model.config, "_attn_implementation", None) == attention.NAME
    if recording:  # maps from the flagged layers only; SDPA elsewhere
        attention.record_layers(model, attention_layers)
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
    return Outputs(logits=out.logits, hidden=hidden, attentions=attentions, mask=inputs["attention_mask"])


@dataclass(frozen=True)
class Layers:
    """Which layers one model must expose for the loss terms."""

    hidden: frozenset[int] = frozenset()
    attentions: frozenset[int] = frozenset()


def layers_to_capture(pairs, features: bool, attention: bool) -> tuple[Layers, Layers]:
    """(student, teacher) layers the terms read: hidden states for cos/mse, maps for attn.

    Layer 0 (embeddings) has no attention map, so pairs touching it feed hidden terms only.
    """
    with_maps = [p for p in pairs if p.student > 0 and p.teacher > 0] if attention else []
    hidden = pairs if features else []
    return (
        Layers(frozenset(p.student for p in hidden), frozenset(p.student for p in with_maps)),
        Layers(frozenset(p.teacher for p in hidden), frozenset(p.teacher for p in with_maps)),
    )
