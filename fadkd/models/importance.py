"""Minitron's activation importance (arXiv 2407.14679, §2.2), measured with hooks on teacher forward passes.

Over the real tokens of the calibration batches (padding never counts), each score is a mean per token:

- head h of layer l: the L2 norm of its attention output (the head's slice of the input of the attention's
  output projection, before it mixes the heads);
- feed-forward neuron j of layer l: |activation|, the input of the feed-forward output projection (after the
  nonlinearity; Llama: act(gate) · up);
- hidden channel c: |output| of every LayerNorm / RMSNorm over the width, summed over the norms;
- layer l: 1 − cos(input, output) of its block (how much the layer changes its input: Block Influence,
  ShortGPT arXiv 2403.03853, the depth score Minitron compares).
"""

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fadkd.models.prune_shape import Family
from fadkd.models.shrink import layer_list


@dataclass
class Scores:
    heads: list[Tensor] = field(default_factory=list)  # per layer [heads]
    ffn: list[Tensor] = field(default_factory=list)  # per layer [intermediate]
    hidden: Tensor | None = None  # [hidden]
    layers: Tensor | None = None  # [layers]
    tokens: int = 0  # real calibration tokens the means are over


class _Totals:
    """Sums over real tokens, filled by the hooks; `mask` is the current batch's [B, T] mask (float)."""

    def __init__(self) -> None:
        self.mask: Tensor | None = None
        self.tokens = 0.0
        self.sums: dict[str, Tensor] = {}

    def add(self, key: str, per_token: Tensor) -> None:
        """per_token [B, T, ...]: summed over the real tokens into sums[key]."""
        m = self.mask.to(per_token.dtype).reshape(*self.mask.shape, *([1] * (per_token.dim() - 2)))
        total = (per_token.float() * m).sum(dim=(0, 1)).detach().cpu()
        self.sums[key] = self.sums[key] + total if key in self.sums else total


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _hooks(model: nn.Module, family: Family, head_dim: int, totals: _Totals) -> list:
    hidden = model.config.hidden_size
    handles = []
    for index, layer in enumerate(layer_list(model)):
        modules = dict(layer.named_modules())

        def heads(_m, args, index=index):
            x = args[0]
            totals.add(f"heads{index}", x.reshape(*x.shape[:-1], -1, head_dim).float().norm(dim=-1))

        def ffn(_m, args, index=index):
            totals.add(f"ffn{index}", args[0].abs())

        def block(_m, args, kwargs, output, index=index):
            x = args[0] if args else kwargs["hidden_states"]
            change = 1 - F.cosine_similarity(x.float(), _first(output).float(), dim=-1)  # [B, T]
            totals.add(f"layer{index}", change[..., None])

        handles.append(modules[family.attn_out].register_forward_pre_hook(heads))
        handles.append(modules[family.ffn_out].register_forward_pre_hook(ffn))
        handles.append(layer.register_forward_hook(block, with_kwargs=True))
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if re.search(family.norms, name) and isinstance(weight, Tensor) and weight.shape == (hidden,):
            handles.append(module.register_forward_hook(lambda _m, _a, out: totals.add("hidden", _first(out).abs())))
    return handles


@torch.no_grad()
def measure(model: nn.Module, family: Family, head_dim: int, batches: list[dict[str, Tensor]]) -> Scores:
    """Importance of every head, neuron, channel and layer of `model` over `batches` (model inputs, on its device)."""
    totals = _Totals()
    handles = _hooks(model, family, head_dim, totals)
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            ids = inputs["input_ids"]
            totals.mask = inputs.get("attention_mask", torch.ones(ids.shape, device=ids.device))
            totals.tokens += float(totals.mask.sum())
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    n, depth = max(totals.tokens, 1.0), len(layer_list(model))
    s = totals.sums
    return Scores(
        heads=[s[f"heads{i}"] / n for i in range(depth)],
        ffn=[s[f"ffn{i}"] / n for i in range(depth)],
        hidden=s["hidden"] / n,
        layers=torch.cat([s[f"layer{i}"] for i in range(depth)]) / n,
        tokens=int(totals.tokens),
    )
