"""Attention maps for the mapped layers only, SDPA everywhere else.

transformers 5 runs BERT and Llama with SDPA, which returns no attention probabilities;
forcing eager attention in every layer to get them costs time in layers whose maps no loss
reads. fadkd registers its own attention function, "fadkd", through transformers' attention
interface: a layer flagged by `record_layers` computes its probabilities explicitly (the same
arithmetic as eager attention) and keeps them, pre-dropout, on the module; every other layer
calls SDPA. Models without the attention interface (e.g. MPNet) keep eager attention and give
their maps through output_attentions. tests/test_attention.py checks "fadkd" against eager.
Layers flagged for relations (`loss.attn=relations`, fadkd/losses/relations.py) also keep the query,
key and value they receive, [B, heads, L, d], keys and values repeated to the query-head count
under grouped-query attention (as the model does before its attention product). Models without
the interface (MPNet) give theirs through forward hooks on their q/k/v projections instead
(`capture_projections`; encoders without rotary embeddings or grouped-query attention only).
"""

from contextlib import contextmanager

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "fadkd"


def fadkd_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """SDPA, or explicit softmax(QKᵀ·scale + mask)·V that keeps the probabilities when flagged."""
    kwargs.pop("output_attentions", None)
    if getattr(module, "fadkd_record_qkv", False):  # relations read them (no copy: autograd keeps them anyway)
        groups = getattr(module, "num_key_value_groups", 1)
        module.fadkd_qkv = (query, repeat_kv(key, groups), repeat_kv(value, groups))
    if not getattr(module, "fadkd_record", False):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)  # grouped-query attention
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None:  # sdpa_mask gives booleans (True = attend)
        mask = attention_mask[..., : key.shape[-2]]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    elif getattr(module, "is_causal", False) and query.shape[-2] > 1:
        causal = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    module.fadkd_probs = probs  # read by fadkd.models.capture after the forward
    weights = nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, fadkd_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def supports_recording(model_class) -> bool:
    """Whether a model class routes attention through transformers' attention interface."""
    return bool(getattr(model_class, "_supports_attention_backend", False))


def attention_modules(model: nn.Module) -> dict[int, nn.Module]:
    """1-based layer index -> its self-attention module (the ones that carry `layer_idx`)."""
    found = {}
    for name, module in model.named_modules():
        if getattr(module, "layer_idx", None) is not None and "crossattention" not in name:
            found.setdefault(module.layer_idx + 1, module)
    return found


def record_layers(model: nn.Module, layers: frozenset[int], qkv_layers: frozenset[int] = frozenset()) -> None:
    """Flag the layers whose probabilities (or query/key/value) the loss reads; the rest stay on SDPA."""
    for index, module in attention_modules(model).items():
        module.fadkd_record = index in layers
        module.fadkd_record_qkv = index in qkv_layers
        module.fadkd_probs = module.fadkd_qkv = None


def recorded(model: nn.Module, layers: frozenset[int]) -> dict[int, Tensor]:
    """The probabilities the last forward kept, for `layers`, then forgotten."""
    modules = attention_modules(model)
    maps = {i: modules[i].fadkd_probs for i in layers if i in modules and modules[i].fadkd_probs is not None}
    for i in layers:
        if i in modules:
            modules[i].fadkd_probs = None
    return maps


def recorded_qkv(model: nn.Module, layers: frozenset[int]) -> dict[int, tuple[Tensor, Tensor, Tensor]]:
    """The (query, key, value) the last forward kept, for `layers`, then forgotten."""
    modules = attention_modules(model)
    found = {i: modules[i].fadkd_qkv for i in layers if getattr(modules.get(i), "fadkd_qkv", None) is not None}
    for i in layers:
        if i in modules:
            modules[i].fadkd_qkv = None
    return found


PROJECTION_NAMES = (("query", "key", "value"), ("q", "k", "v"))  # BERT-like, MPNet


def projection_modules(model: nn.Module) -> dict[int, tuple[nn.Module, tuple[str, str, str]]]:
    """1-based layer -> (self-attention module, names of its q/k/v Linear layers), in model order."""
    found = []
    for name, module in model.named_modules():
        if "crossattention" in name:
            continue
        for names in PROJECTION_NAMES:
            if all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
                found.append((module, names))
                break
    return {i + 1: entry for i, entry in enumerate(found)}


@contextmanager
def capture_projections(model: nn.Module, layers: frozenset[int]):
    """Yield {layer: [query, key, value]}, filled by the next forward, each [B, heads, L, d].

    For models without transformers' attention interface: forward hooks on the self-attention
    q/k/v Linear outputs, split into config.num_attention_heads heads, as the model does.
    """
    modules, heads = projection_modules(model), model.config.num_attention_heads
    store: dict[int, list] = {}
    handles = []
    for layer in sorted(layers & set(modules)):
        module, names = modules[layer]
        for slot, name in enumerate(names):

            def hook(_module, _inputs, out, layer=layer, slot=slot):
                b, length, width = out.shape
                store.setdefault(layer, [None] * 3)[slot] = out.view(b, length, heads, width // heads).transpose(1, 2)

            handles.append(getattr(module, name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
