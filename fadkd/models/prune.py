"""student.init=pruned: the teacher pruned in depth and width by activation importance (Minitron, arXiv 2407.14679).

`prune(teacher, cfg, batches)` measures importance on calibration batches (fadkd/models/importance.py), keeps
the top-k heads, feed-forward neurons and hidden channels in each layer and the layers asked for (a list, or
the count that change their input most), and slices every weight by the family's table
(fadkd/models/prune_shape.py): embeddings (word, position, token type) and their norm, Q/K/V/O, the
feed-forward block, every norm, the pooler / classifier head or the LM head (tied embeddings stay tied). The
result is the teacher's class built from the new config with the sliced state dict loaded strictly, so the
folder it saves is an ordinary Hugging Face one. Kept units stay in the teacher's order, so keeping
everything gives the teacher itself, output for output. Grouped-query attention loses whole key/value groups
(a group's importance is the sum of its query heads'); MPNet keeps one head set for every layer (its relative
attention bias is shared), ranked by the heads' importance summed over layers.
"""

import copy
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from fadkd.config.prune import PruneConfig
from fadkd.models.importance import Scores, measure
from fadkd.models.load import ModelError, count_parameters
from fadkd.models.prune_shape import Family, Shape, family_of, shape_of, target_shape

LAYER_KEY = re.compile(r"\.(layer|layers)\.(\d+)\.")


@dataclass
class Plan:
    """What a pruned student keeps, in the teacher's indices (every list ascending)."""

    layers: list[int]
    hidden: list[int]
    heads: dict[int, list[int]] = field(default_factory=dict)  # teacher layer -> query heads kept
    kv_heads: dict[int, list[int]] = field(default_factory=dict)  # teacher layer -> key/value heads kept
    ffn: dict[int, list[int]] = field(default_factory=dict)  # teacher layer -> neurons kept


def top(scores: Tensor, k: int) -> list[int]:
    """The k highest-scoring indices, in ascending order (ties: the lower index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def choose(scores: Scores, prune: PruneConfig, t: Shape, s: Shape, family: Family) -> Plan:
    """The units to keep: top-k by importance, or the configured layer list."""
    layers = prune.layers if isinstance(prune.layers, list) else top(scores.layers, s.layers)
    plan = Plan(layers=layers, hidden=top(scores.hidden, s.hidden))
    group = t.heads // t.kv_heads
    shared = torch.stack(scores.heads).sum(0) if family.shared_heads else None
    for layer in layers:
        heads = shared if shared is not None else scores.heads[layer]
        groups = top(heads.reshape(t.kv_heads, group).sum(1), s.kv_heads)  # whole key/value groups
        plan.kv_heads[layer] = groups
        plan.heads[layer] = [g * group + j for g in groups for j in range(group)]
        plan.ffn[layer] = top(scores.ffn[layer], s.ffn)
    return plan


def _dims(heads: list[int], head_dim: int) -> list[int]:
    return [h * head_dim + d for h in heads for d in range(head_dim)]


def _index(kind: str | None, layer: int | None, plan: Plan, head_dim: int) -> list[int] | None:
    if kind is None:
        return None
    if kind == "h":
        return plan.hidden
    if kind == "heads":
        return plan.heads[plan.layers[0]]
    if layer is None:
        raise ModelError(f"a per-layer weight ('{kind}') outside the transformer layers")
    return {"a": lambda: _dims(plan.heads[layer], head_dim), "kv": lambda: _dims(plan.kv_heads[layer], head_dim),
            "f": lambda: plan.ffn[layer]}[kind]()  # fmt: skip


def slice_state(model: nn.Module, family: Family, plan: Plan, head_dim: int) -> dict[str, Tensor]:
    """The teacher's state dict cut to `plan`, layers renumbered 0..n-1; a weight no rule covers is refused."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    renumber = {old: new for new, old in enumerate(plan.layers)}
    out = {}
    for key, value in model.state_dict().items():
        found = LAYER_KEY.search(key)
        layer = int(found.group(2)) if found else None
        if layer is not None and layer not in renumber:
            continue
        new_key = key if found is None else LAYER_KEY.sub(f".{found.group(1)}.{renumber.get(layer)}.", key, count=1)
        kinds = next((k for pattern, k in family.rules if re.search(pattern, key)), None)
        if kinds is None:
            if key in params:
                raise ModelError(f"student.init=pruned cannot prune the weight {key} of {type(model).__name__}")
            out[new_key] = value.clone()  # a buffer (position ids): as it is
            continue
        for dim, kind in enumerate(kinds):
            index = _index(kind, layer, plan, head_dim)
            if index is not None:
                value = value.index_select(dim, torch.tensor(index, device=value.device))
        out[new_key] = value.clone()
    return out


def pruned_config(config, plan: Plan, s: Shape):
    new = copy.deepcopy(config)
    new.num_hidden_layers, new.hidden_size, new.intermediate_size = len(plan.layers), s.hidden, s.ffn
    new.num_attention_heads = s.heads
    if hasattr(new, "num_key_value_heads"):
        new.num_key_value_heads = s.kv_heads
    if hasattr(new, "head_dim"):
        new.head_dim = s.head_dim
    if isinstance(getattr(new, "layer_types", None), list):
        new.layer_types = [new.layer_types[i] for i in plan.layers]
    new.fadkd_pruned = {"teacher_layers": plan.layers, "hidden_channels": plan.hidden}  # mapping, projections
    return new


def build(teacher: PreTrainedModel, plan: Plan, s: Shape) -> PreTrainedModel:
    """The teacher's class at the pruned shape, holding the sliced weights (loaded strictly)."""
    family = family_of(teacher.config)
    state = slice_state(teacher, family, plan, shape_of(teacher.config).head_dim)
    with torch.random.fork_rng(devices=[]):  # the throwaway init leaves the run's RNG alone
        student = type(teacher)(pruned_config(teacher.config, plan, s))
    student.load_state_dict(state, strict=True)
    return student.to(next(teacher.parameters()).device).requires_grad_(True).train()


def embedding_parameters(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))


def prune(teacher: PreTrainedModel, cfg: PruneConfig, batches: list[dict[str, Tensor]]) -> tuple[PreTrainedModel, dict]:
    """The pruned student and its report (kept units, importance, parameters before and after)."""
    family, t = family_of(teacher.config), shape_of(teacher.config)
    s = target_shape(teacher.config, cfg)
    scores = measure(teacher, family, t.head_dim, batches)
    plan = choose(scores, cfg, t, s, family)
    student = build(teacher, plan, s)
    report = {
        "shape": {"teacher": vars(t), "student": {**vars(s), "layers": len(plan.layers)}},
        "kept": {
            "layers": plan.layers,
            "hidden": plan.hidden,
            "heads": plan.heads,
            "kv_heads": plan.kv_heads,
            "ffn": plan.ffn,
        },  # fmt: skip
        "importance": {
            "layers": scores.layers.tolist(),
            "heads": [h.tolist() for h in scores.heads],
            "hidden": scores.hidden.tolist(),
            "ffn": [f.tolist() for f in scores.ffn],
        },  # fmt: skip
        "parameters": {
            who: {"total": count_parameters(m), "non_embedding": count_parameters(m) - embedding_parameters(m)}
            for who, m in (("teacher", teacher), ("student", student))
        },
        "calibration": {"batches": len(batches), "tokens": scores.tokens},
    }
    return student, report
