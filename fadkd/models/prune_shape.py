"""The model families student.init=pruned knows, and the target shape checked against the teacher's config.

A family names, by the teacher's state-dict keys, which axis of each weight runs over which kind of unit:
"h" hidden channels, "a" the attention's query/output dimensions (heads × head_dim), "kv" the key/value
dimensions (grouped-query attention), "f" feed-forward neurons, "heads" attention heads themselves (MPNet's
relative attention bias, shared by every layer), None all of them. The first rule that matches a key wins.
A key no rule matches is refused (fadkd/models/prune.py), so a family's table cannot silently miss a weight.

Head size: BERT, RoBERTa and MPNet derive it as hidden_size / num_attention_heads (transformers 5 has no
`pruned_heads` any more), so pruning heads there means pruning the hidden channels with them, at
hidden = heads × head_dim. Llama-style decoders store head_dim in the config, so heads and hidden are free.
"""

from dataclasses import dataclass

from fadkd.config.prune import PruneConfig
from fadkd.models.load import ModelError

_BERT_TAIL = (
    (r"intermediate\.dense\.weight$", ("f", "h")),
    (r"intermediate\.dense\.bias$", ("f",)),
    (r"layer\.\d+\.output\.dense\.weight$", ("h", "f")),
    (r"(output\.dense|attn\.o|pooler\.dense|classifier\.dense)\.bias$", ("h",)),
    (r"(pooler|classifier)\.dense\.weight$", ("h", "h")),
    (r"classifier(\.out_proj)?\.weight$", (None, "h")),
    (r"classifier(\.out_proj)?\.bias$", (None,)),
)
BERT_RULES = (
    (r"embeddings\.(word|position|token_type)_embeddings\.weight$", (None, "h")),
    (r"LayerNorm\.(weight|bias)$", ("h",)),
    (r"attention\.self\.(query|key|value)\.weight$", ("a", "h")),
    (r"attention\.self\.(query|key|value)\.bias$", ("a",)),
    (r"attention\.output\.dense\.weight$", ("h", "a")),
    *_BERT_TAIL,
)
MPNET_RULES = (
    (r"embeddings\.(word|position)_embeddings\.weight$", (None, "h")),
    (r"LayerNorm\.(weight|bias)$", ("h",)),
    (r"attention\.attn\.(q|k|v)\.weight$", ("a", "h")),
    (r"attention\.attn\.(q|k|v)\.bias$", ("a",)),
    (r"attention\.attn\.o\.weight$", ("h", "a")),
    (r"relative_attention_bias\.weight$", (None, "heads")),
    *_BERT_TAIL,
)
LLAMA_RULES = (
    (r"(embed_tokens|lm_head|score)\.weight$", (None, "h")),
    (r"(input_layernorm|post_attention_layernorm|model\.norm)\.weight$", ("h",)),
    (r"self_attn\.q_proj\.weight$", ("a", "h")),
    (r"self_attn\.(k|v)_proj\.weight$", ("kv", "h")),
    (r"self_attn\.q_proj\.bias$", ("a",)),
    (r"self_attn\.(k|v)_proj\.bias$", ("kv",)),
    (r"self_attn\.o_proj\.weight$", ("h", "a")),
    (r"(self_attn\.o_proj|mlp\.down_proj)\.bias$", ("h",)),
    (r"mlp\.(gate|up)_proj\.weight$", ("f", "h")),
    (r"mlp\.(gate|up)_proj\.bias$", ("f",)),
    (r"mlp\.down_proj\.weight$", ("h", "f")),
)


@dataclass(frozen=True)
class Family:
    rules: tuple  # (regex over state-dict keys, axis kinds per dimension)
    attn_out: str  # the attention's output projection, inside a layer: its input is every head's output
    ffn_out: str  # the feed-forward output projection, inside a layer: its input is every neuron's activation
    norms: str  # regex of the norm modules over the hidden width (their outputs rank the channels)
    head_dim_from_width: bool  # head size = hidden / heads (BERT family) instead of config.head_dim
    shared_heads: bool = False  # one head set for every layer (MPNet: the relative attention bias is shared)


BERT = Family(BERT_RULES, "attention.output.dense", "output.dense", r"LayerNorm$", True)
FAMILIES = {
    "bert": BERT,
    "roberta": BERT,
    "mpnet": Family(MPNET_RULES, "attention.attn.o", "output.dense", r"LayerNorm$", True, shared_heads=True),
    "llama": Family(LLAMA_RULES, "self_attn.o_proj", "mlp.down_proj", r"(layernorm|\.norm)$", False),
}


@dataclass(frozen=True)
class Shape:
    """A transformer's prunable shape: the teacher's, or the student's target."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int


def family_of(config) -> Family:
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ModelError(
            f"student.init=pruned does not know the model family '{config.model_type}' of the teacher; it prunes "
            f"{', '.join(sorted(FAMILIES))} (BERT/RoBERTa/MPNet encoders, Llama-style decoders); use "
            "student=from-teacher (whole layers) for other models"
        )
    return family


def shape_of(config) -> Shape:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return Shape(config.num_hidden_layers, config.hidden_size, heads, kv, head_dim, config.intermediate_size)


def target_shape(config, prune: PruneConfig) -> Shape:
    """The student's shape for the teacher `config`, or a ModelError saying which key to change and how."""
    family, t = family_of(config), shape_of(config)
    sizes = {
        "heads": (t.heads, "attention heads"),
        "ffn": (t.ffn, "feed-forward neurons"),
        "hidden": (t.hidden, "hidden channels"),
    }
    for key, (most, what) in sizes.items():
        value = getattr(prune, key)
        if value is not None and value > most:
            raise ModelError(
                f"student.prune.{key}={value}: the teacher has only {most} {what} per layer; pruning keeps a "
                f"subset, so set student.prune.{key} to at most {most}"
            )
    layers = prune.layers if isinstance(prune.layers, int) else len(prune.layers or range(t.layers))
    out = [k for k in (prune.layers if isinstance(prune.layers, list) else []) if k >= t.layers]
    if out or layers > t.layers:
        raise ModelError(
            f"student.prune.layers={prune.layers}: the teacher has {t.layers} layers (0 to {t.layers - 1}); keep "
            f"at most {t.layers}, numbered from 0"
        )
    heads, hidden = prune.heads or t.heads, prune.hidden or t.hidden
    if family.head_dim_from_width:
        _check_head_size(config.model_type, t, heads, hidden, prune)
    group = t.heads // t.kv_heads
    if heads % group:
        raise ModelError(
            f"student.prune.heads={heads} would split a key/value group: the teacher's {t.heads} query heads share "
            f"{t.kv_heads} key/value heads, {group} each, and whole groups are pruned; choose a multiple of {group}"
        )
    return Shape(layers, hidden, heads, heads // group, t.head_dim, prune.ffn or t.ffn)


def _check_head_size(model_type: str, t: Shape, heads: int, hidden: int, prune: PruneConfig) -> None:
    """BERT-style: head size = hidden / heads, which pruning must leave at the teacher's."""
    if hidden % heads:
        raise ModelError(
            f"student.prune.heads={heads} does not divide the width hidden={hidden}; {model_type} splits the width "
            f"into equal heads: choose heads and hidden with hidden = heads × {t.head_dim}"
        )
    if hidden // heads != t.head_dim:
        keys = f"student.prune.heads={heads} student.prune.hidden={heads * t.head_dim}"
        raise ModelError(
            f"student.prune.heads={prune.heads} with hidden={hidden} would change the head size from {t.head_dim} to "
            f"{hidden // heads}: {model_type} derives it as hidden / heads, so its heads are pruned together with "
            f"the hidden channels; set {keys} (or hidden={hidden} heads={hidden // t.head_dim})"
        )
