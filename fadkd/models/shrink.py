"""Students built from a bigger model's layers (DistilBERT's initialisation), encoders and decoders alike.

`student.init=from_teacher` keeps some of the teacher's transformer layers (`keep_layers`, 0-based,
or `every_k`), with its embeddings, final norm and head, and renumbers them 0..n-1; the result is
an ordinary Hugging Face model that `save_pretrained` writes and `from_pretrained` reloads.
`student.layers_from=<folder>` takes the layers from another checkpoint of the same architecture
instead of the fine-tuned teacher (Patient KD's choice: the pretrained base); a classifier head the
checkpoint lacks starts fresh, seeded by student.init_seed.

Which layers: for 12 → 4, [0, 4, 8, 11] (the choice of distilbart's make_student: keep the
bottom layer, which reads the embeddings, and the top one, whose output the head was trained on).
`mapping.strategy=kept` aligns each student layer with the output of the teacher layer it was
copied from (student i ↔ teacher keep[i-1]+1): at step 0 the first pair already agrees, and the
last pair is the teacher's top layer.
"""

import copy
import os
from dataclasses import replace

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from fadkd.config.schema import Config, ModelConfig
from fadkd.models.load import ModelError, _check_folder, _looks_local, load_classifier


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks: model.model.layers (Llama), else the ModuleList as long as the depth
    (bert.encoder.layer, mpnet.encoder.layer, roberta.encoder.layer, ...)."""
    depth = model.config.num_hidden_layers
    inner = getattr(model, "model", None)
    if isinstance(getattr(inner, "layers", None), nn.ModuleList):
        return inner.layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise ModelError(f"cannot find the {depth} transformer layers of {type(model).__name__} to keep a subset")


def layers_to_keep(cfg: ModelConfig, teacher_depth: int, source: str = "the teacher") -> list[int]:
    """0-based teacher layers the from_teacher student keeps (`source`: where they come from, for the message)."""
    keep = list(cfg.keep_layers) if cfg.keep_layers is not None else list(range(0, teacher_depth, cfg.every_k))
    bad = [k for k in keep if k >= teacher_depth]
    if bad:
        raise ModelError(
            f"student.keep_layers {bad} out of range: {source} has {teacher_depth} layers, numbered 0 to "
            f"{teacher_depth - 1}"
        )
    return keep


def from_teacher(teacher: PreTrainedModel, keep: list[int]) -> PreTrainedModel:
    """A copy of `teacher` with only the layers `keep` (0-based), renumbered 0..len(keep)-1."""
    student = copy.deepcopy(teacher)
    layers = layer_list(student)
    kept = nn.ModuleList(layers[i] for i in keep)
    for parent in student.modules():  # replace the list wherever it is held
        for name, child in list(parent.named_children()):
            if child is layers:
                setattr(parent, name, kept)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if getattr(module, "layer_idx", None) is not None:
                module.layer_idx = new_index
    config = student.config
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    student.requires_grad_(True)
    return student.train()


SHAPE = ("model_type", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")


def _shape(cfg: ModelConfig) -> dict:
    """The teacher's architecture and widths: its folder's config.json, or the tiny preset's fields."""
    if cfg.path is not None:
        config = AutoConfig.from_pretrained(os.path.expanduser(cfg.path), trust_remote_code=cfg.trust_remote_code)
        return {k: getattr(config, k, None) for k in SHAPE}
    return {"model_type": str(cfg.arch), "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_heads,
            "intermediate_size": cfg.intermediate_size}  # fmt: skip


def layer_source(cfg: Config) -> ModelConfig:
    """The model whose layers a from_teacher student keeps: the teacher, or student.layers_from."""
    source = cfg.student.layers_from
    if source is None:
        return cfg.teacher
    if _looks_local(source):
        _check_folder(source, "layers_from", "student")
    try:
        mine = AutoConfig.from_pretrained(os.path.expanduser(source))
    except (OSError, ValueError) as err:
        raise ModelError(f"student.layers_from={source}: cannot read its config.json ({err})") from None
    theirs = _shape(cfg.teacher)
    differ = [f"{k} {getattr(mine, k, None)} vs {v}" for k, v in theirs.items() if getattr(mine, k, None) != v]
    if differ:
        raise ModelError(
            f"student.layers_from={source} is not the teacher's architecture ({', '.join(differ)} in the teacher); "
            "take the layers from a checkpoint of the same model and width (e.g. the teacher's pretrained base)"
        )
    return replace(cfg.teacher, name=f"{cfg.teacher.name}-base", path=source)


def build_classifier_student(cfg: Config, num_labels: int, vocab_size: int, attn: str | None) -> PreTrainedModel:
    """The student of a GLUE run: cfg.student as it is, or kept layers of the teacher (or layers_from); for
    init=pruned the whole teacher, which the run prunes on its calibration rows (fadkd/run/pruning.py)."""
    if cfg.student.init == "random":
        return load_classifier(cfg.student, "student", num_labels, vocab_size, attn)
    with torch.random.fork_rng():  # a fresh head (a base checkpoint) is seeded by init_seed, not the run
        torch.manual_seed(cfg.student.init_seed)
        full = load_classifier(layer_source(cfg), "student", num_labels, vocab_size, attn)
    if cfg.student.init == "pruned":
        return full
    source = f"student.layers_from={cfg.student.layers_from}" if cfg.student.layers_from else "the teacher"
    return from_teacher(full, layers_to_keep(cfg.student, full.config.num_hidden_layers, source))


def kept_pairs(cfg: Config) -> list[list[int]]:
    """mapping.strategy=kept: [student layer, teacher layer] (1-based outputs), each kept layer's own output.

    init=pruned: the layers the pruning kept (a count is replaced by the chosen list once pruned)."""
    keep = cfg.student.keep_layers if cfg.student.init == "from_teacher" else None
    if cfg.student.init == "pruned":
        keep = cfg.student.prune.layers if isinstance(cfg.student.prune.layers, list) else None
    if keep is None:
        raise ModelError(
            "mapping.strategy=kept aligns each kept layer with its own output in the teacher, so it needs "
            "student.init=from_teacher with student.keep_layers=[...] or student.init=pruned; use mapping=uniform "
            "otherwise"
        )
    return [[i + 1, k + 1] for i, k in enumerate(keep)]
