"""A run's pruned student (student.init=pruned): calibration, pruning, the report, the saved folder.

`prune_student` measures importance on the first student.prune.calibration_rows training rows, prunes
(fadkd/models/prune.py), evaluates the teacher and the pruned student on the dev set (GLUE: the task's
metrics; causal LMs: held-out perplexity), prints what was kept and writes <run>/prune_report.json and
<run>/pruned/ (the student before any training: `fadkd finetune model=hf student.path=<run>/pruned` trains it alone).
The chosen layer list replaces a count in cfg.student.prune.layers, so mapping=kept reads it.
"""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from transformers import AutoConfig, BertConfig, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from fadkd.config.schema import Config
from fadkd.models.load import ModelError, _check_folder, _looks_local
from fadkd.models.prune import prune
from fadkd.models.prune_shape import Shape, target_shape
from fadkd.run import distributed
from fadkd.run.checkpoint import safe_dir
from fadkd.run.progress import make_console

console = make_console()
REPORT = "prune_report.json"


def teacher_config(cfg: Config):
    """The teacher's Hugging Face config, without its weights (the tiny presets' built from their fields)."""
    t = cfg.teacher
    if t.path is None:
        shape = dict(hidden_size=t.hidden_size, num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads)
        shape["intermediate_size"] = t.intermediate_size
        if t.arch == "llama":
            return LlamaConfig(num_key_value_heads=t.num_kv_heads or t.num_heads, **shape)
        return BertConfig(**shape)
    if _looks_local(t.path):
        _check_folder(t.path, "path", "teacher")
    try:
        return AutoConfig.from_pretrained(os.path.expanduser(t.path), trust_remote_code=t.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(f"teacher: cannot read the config of {t.path}: {err}") from None


def check_prune_shape(cfg: Config) -> Shape:
    """student.prune.* against the teacher's config: a shape it cannot take is refused before any work."""
    return target_shape(teacher_config(cfg), cfg.student.prune)


def calibration_batches(rows: list[dict], collate: Callable, n: int, batch_size: int, device) -> list[dict]:
    """Model inputs of the first n rows, batch_size at a time, on `device`."""
    rows = rows[:n]
    out = []
    for i in range(0, len(rows), batch_size):
        inputs = collate(rows[i : i + batch_size]).student
        out.append({k: v.to(device) for k, v in inputs.items()})
    return out


def prune_student(
    cfg: Config,
    teacher: PreTrainedModel,
    batches: list[dict],
    evaluate: Callable[[PreTrainedModel], dict],
    tok: PreTrainedTokenizerBase,
    out_dir: Path,
) -> PreTrainedModel:
    """The pruned student of this run; the report and the folder written under out_dir."""
    started, cpu = time.perf_counter(), time.process_time()
    student, report = prune(teacher, cfg.student.prune, batches)
    report["seconds"] = round(time.perf_counter() - started, 3)  # calibration included
    report["cpu_seconds"] = round(
        time.process_time() - cpu, 3
    )  # this process's CPU time (shared cores: the wall varies)
    report["dev"] = {"teacher": evaluate(teacher.eval()), "student_after_pruning": evaluate(student.eval())}
    cfg.student.prune.layers = list(report["kept"]["layers"])  # mapping=kept aligns each with its own output
    if distributed.launched().is_main:  # under torchrun every rank prunes alike; rank 0 writes
        folder = safe_dir(out_dir, "pruned")
        student.save_pretrained(folder)
        tok.save_pretrained(folder)
        (out_dir / REPORT).write_text(json.dumps(report, indent=1) + "\n")
        console.print(describe(report) + f"\nwritten: {out_dir / REPORT}, {folder}")
    return student.train()


def describe(report: dict) -> str:
    """A few lines on the pruned student: its shape, what it kept, parameters, dev metrics."""
    t, s = report["shape"]["teacher"], report["shape"]["student"]
    p, tokens = report["parameters"], report["calibration"]["tokens"]
    keys = [k for k in ("layers", "hidden", "heads", "kv_heads", "ffn") if t[k] != s[k]]
    keys = [k for k in keys if k != "kv_heads" or t["kv_heads"] != t["heads"]]  # no grouped-query attention
    lines = [
        f"pruned in {report['seconds']:.1f} s ({report['cpu_seconds']:.1f} s CPU) on {tokens} calibration tokens: "
        + ", ".join(f"{k} {t[k]} -> {s[k]}" for k in keys),
        f"kept layers {report['kept']['layers']}; parameters {p['teacher']['total']:,} -> {p['student']['total']:,} "
        f"(non-embedding {p['teacher']['non_embedding']:,} -> {p['student']['non_embedding']:,})",
    ]
    for who, metrics in report["dev"].items():
        lines.append(f"{who} dev: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return "\n".join(lines)
