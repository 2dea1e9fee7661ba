"""Write the causal-LM table of scripts/lm_table.sh: a markdown page and lm.jsonl rows.

    python scripts/lm_table_report.py RUNS_DIR --runs "student_init:42 kd_only:42 kd_only:43 ..." \
        --corpus CORPUS/manifest.json --md bench/results/lm_glue_text.md --jsonl bench/results/lm.jsonl

RUNS_DIR holds one run folder per row and seed, named <row>-s<seed>. The teacher row is the
teacher's evaluation recorded in the first run (every LM run evaluates the teacher on the same
held-out set). The table has one line per row: the mean over its seeds, ± their sample standard
deviation when there are several; a second table lists every run. Each run's command is rebuilt
from the overrides Hydra recorded. lm.jsonl gets one JSON object per row and seed:
    {"task", "row", "seed", "corpus", "train_tokens", "metrics": {perplexity, bleu, rouge_l, cer,
     bleu_vs_teacher, rouge_l_vs_teacher, cer_vs_teacher}, "train_seconds", "command", "commit", "machine",
     "device", "precision"}
"device" is the runs' train.device with the GPU's name and CUDA version when it is cuda (or auto on a GPU);
"precision" their train.precision (bf16: autocast forwards, fp32 loss terms, weights and AdamW).
train_tokens = optimizer steps x train.batch_size x task.block_size (every block is full but the
corpus's last); the teacher's line has seed null and train_tokens 0.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fadkd.report.paper_table import _cell
from fadkd.report.runs import overrides_of

JSONL_METRICS = ("perplexity", "bleu", "rouge_l", "cer", "bleu_vs_teacher", "rouge_l_vs_teacher", "cer_vs_teacher")
COLUMNS = {  # header -> (key, format)
    "Perplexity": ("perplexity", "{:.2f}"),
    "BLEU": ("bleu", "{:.2f}"),
    "ROUGE-L": ("rouge_l", "{:.2f}"),
    "CER": ("cer", "{:.3f}"),
    "BLEU vs T": ("bleu_vs_teacher", "{:.2f}"),
    "ROUGE-L vs T": ("rouge_l_vs_teacher", "{:.2f}"),
    "CER vs T": ("cer_vs_teacher", "{:.3f}"),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        memory = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{platform.system()} {platform.machine()}"
    )


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def command(run: Path) -> str:
    return " ".join(["fadkd train", *map(shlex.quote, overrides_of(run))])


def device_of(runs: dict) -> tuple[str, str]:
    """(device, precision) of the runs (the first run's train.device / train.precision; all rows share them)."""
    train = next(iter(runs.values()))["train"]
    device = str(train.get("device", "auto"))
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        device = (
            f"cuda ({torch.cuda.get_device_name()}, CUDA {torch.version.cuda})" if torch.cuda.is_available() else device
        )
    elif device == "auto":
        device = "cpu"
    return device, str(train.get("precision", "fp32"))


def parse_runs(spec: str) -> list[tuple[str, int]]:
    """'kd_only:42 kd_only:43' -> [("kd_only", 42), ("kd_only", 43)]."""
    out = []
    for item in spec.split():
        row, _, seed = item.partition(":")
        out.append((row, int(seed)))
    return out


def _reads_teacher(loss) -> bool:
    return any(float(loss[k]) > 0 for k in ("alpha", "beta", "gamma", "delta"))


def load_run(run: Path) -> dict:
    """What the table needs from one run folder."""
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = OmegaConf.load(run / "config.yaml")
    wall = run / "wall_seconds"
    return {
        "metrics": metrics,
        "train_tokens": metrics["steps"] * int(cfg.train.batch_size) * int(cfg.task.block_size),
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": float(wall.read_text()) if wall.exists() else None,
        "cache": bool(cfg.cache.enabled) and metrics["steps"] > 0 and _reads_teacher(cfg.loss),
        "top_k": int(cfg.cache.top_k) if "top_k" in cfg.cache else None,
        "command": command(run),
        "train": OmegaConf.to_container(cfg.train),
    }


def summarise(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation or None for one value)."""
    known = [v for v in values if v is not None]
    if not known:
        return None, None
    return statistics.fmean(known), (statistics.stdev(known) if len(known) > 1 else None)


def cell(values: list[float | None], fmt: str) -> str:
    mean, sd = summarise(values)
    if mean is None:
        return "-"
    return _cell(mean, fmt) + ("" if sd is None else f" ± {_cell(sd, fmt)}")


def markdown(ns, runs: dict, teacher: dict | None, corpus: dict, head: str, where: str) -> list[str]:
    device, precision = device_of(runs)
    first = next(iter(runs.values()))["metrics"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    headers = ["Row", "Seeds", *COLUMNS, "Params", "Train tokens", "Train s", "Wall s"]
    lines = [
        f"# Causal-LM distillation table ({corpus.get('name', ns.task)})",
        "",
        f"- made by: `{ns.script}` ({stamp})",
        f"- commit: `{head}`",
        f"- machine: {where}",
        f"- device: {device}; precision: {precision}",
        f"- teacher: {first.get('teacher_name')}; student: {first.get('student_name')}",
        f"- corpus: {corpus.get('description', '?')}",
        f"  ({corpus.get('train_texts', '?')} training texts, {corpus.get('heldout_texts', '?')} held out; "
        f"the held-out split is what every row is scored on, and no row trains on it)",
        "- BLEU and ROUGE-L 0-100, CER a fraction, against the reference continuation; vs T = against the",
        "  teacher's own greedy continuation. Several seeds: mean ± sample standard deviation (per-run values",
        "  below). Train s = CPU seconds of the training loop; Wall s = the whole run (model loading, teacher",
        "  evaluation, building the teacher cache when this run built it, evaluations).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    if teacher:
        cells = [_cell(teacher.get(k), f) for k, f in COLUMNS.values()]
        lines.append(
            "| " + " | ".join(["teacher", "-", *cells, _cell(teacher.get("params"), None), "-", "-", "-"]) + " |"
        )
    by_row: dict[str, list] = {}
    for (row, seed), run in runs.items():
        by_row.setdefault(row, []).append((seed, run))
    for row, items in by_row.items():
        student = [r["metrics"]["student"] for _, r in items]
        cells = [cell([m.get(k) for m in student], f) for k, f in COLUMNS.values()]
        seeds = ", ".join(str(s) for s, _ in items)
        params = _cell(items[0][1]["metrics"]["params"]["student"], None)
        tokens = f"{items[0][1]['train_tokens']:,}"
        times = [cell([r[k] for _, r in items], "{:.0f}") for k in ("train_seconds", "wall_seconds")]
        lines.append("| " + " | ".join([row, seeds, *cells, params, tokens, *times]) + " |")
    lines += ["", "Every run:", "", "| Run | " + " | ".join(COLUMNS) + " | Steps | Cache |", "|" + "---|" * 10]
    for (row, seed), run in runs.items():
        m = run["metrics"]["student"]
        cache = f"top {run['top_k']}" if run["cache"] else "-"
        cells = [_cell(m.get(k), f) for k, f in COLUMNS.values()]
        lines.append("| " + " | ".join([f"{row} (seed {seed})", *cells, str(run["metrics"]["steps"]), cache]) + " |")
    lines += ["", "Commands:", ""] + [f"- {row} (seed {seed}): `{run['command']}`" for (row, seed), run in runs.items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--runs", dest="specs", required=True, help="space-separated row:seed (folders <row>-s<seed>)")
    parser.add_argument("--task", default="lm_text")
    parser.add_argument("--corpus", type=Path, help="the corpus's manifest.json (scripts/lm_corpus.py)")
    parser.add_argument("--md", type=Path, required=True)
    parser.add_argument("--jsonl", type=Path, required=True)
    parser.add_argument("--script", default="scripts/lm_table.sh", help="the command that made the table")
    ns = parser.parse_args()

    runs = {(row, seed): load_run(ns.runs / f"{row}-s{seed}") for row, seed in parse_runs(ns.specs)}
    corpus = json.loads(ns.corpus.read_text()) if ns.corpus else {}
    corpus.setdefault("name", corpus.get("description", ns.task).split(":", 1)[0])
    (first_key, first), head, where = next(iter(runs.items())), commit(), machine()
    teacher = first["metrics"].get("teacher")
    if teacher:
        teacher = {**teacher, "params": teacher.get("params") or first["metrics"]["params"].get("teacher")}

    ns.md.parent.mkdir(parents=True, exist_ok=True)
    ns.md.write_text("\n".join(markdown(ns, runs, teacher, corpus, head, where)) + "\n")

    base = {"task": ns.task, "corpus": corpus.get("description", ns.task)}
    lines = []
    if teacher:
        note = f"{first['command']}   # the teacher, evaluated in the {first_key[0]} run"
        lines.append({**base, "row": "teacher", "seed": None, "train_tokens": 0,
                      "metrics": {k: teacher.get(k) for k in JSONL_METRICS}, "train_seconds": None,
                      "command": note})  # fmt: skip
    for (row, seed), run in runs.items():
        student = run["metrics"]["student"]
        lines.append({**base, "row": row, "seed": seed, "train_tokens": run["train_tokens"],
                      "metrics": {k: student.get(k) for k in JSONL_METRICS}, "train_seconds": run["train_seconds"],
                      "command": run["command"]})  # fmt: skip
    ns.jsonl.parent.mkdir(parents=True, exist_ok=True)
    device, precision = device_of(runs)
    with open(ns.jsonl, "a") as f:
        for line in lines:
            f.write(
                json.dumps({**line, "commit": head, "machine": where, "device": device, "precision": precision}) + "\n"
            )
    print(f"wrote {ns.md}; appended {len(lines)} rows to {ns.jsonl}")


if __name__ == "__main__":
    main()
