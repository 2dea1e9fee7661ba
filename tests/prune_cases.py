"""docs/errors.md rows of student.init=pruned (fadkd/models/prune_shape.py, fadkd/config/prune.py)."""

from pathlib import Path

from transformers import GPT2Config

from fadkd.models.load import TINY_TOKENIZER


def _gpt2_teacher(tmp: Path) -> list[str]:
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp / "gpt2")
    return [f"teacher.path={tmp / 'gpt2'}", f"teacher.tokenizer={TINY_TOKENIZER}"]


PRUNED = ["student=pruned"]
PRUNE_CASES = {
    "prune-unknown-family": lambda t: ["train", *PRUNED, *_gpt2_teacher(t)],
    "prune-heads-too-many": lambda t: ["train", *PRUNED, "student.prune.heads=8", "student.prune.hidden=128"],
    "prune-hidden-too-large": lambda t: ["train", *PRUNED, "student.prune.hidden=128"],
    "prune-ffn-too-large": lambda t: ["train", *PRUNED, "student.prune.ffn=256"],
    "prune-head-size": lambda t: ["train", *PRUNED, "student.prune.heads=2"],
    "prune-heads-divide": lambda t: ["train", *PRUNED, "student.prune.hidden=50"],
    "prune-kv-group": lambda t: ["train", "task=lm_sst2", "teacher=tiny-llama", *PRUNED, "student.prune.heads=3"],
    "prune-layers-range": lambda t: ["train", *PRUNED, "student.prune.layers=[0,9]"],
    "prune-layers-order": lambda t: ["train", *PRUNED, "student.prune.layers=[3,1]"],
    "prune-without-init": lambda t: ["train", "student.prune.heads=2"],
    "prune-with-keep-layers": lambda t: ["train", *PRUNED, "student.keep_layers=[0,2]"],
    "projection-channels-unpruned": lambda t: ["train", "loss.projection_init=channels"],
}
