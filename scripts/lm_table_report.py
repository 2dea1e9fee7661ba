"""Write the causal-LM table of scripts/lm_table.sh: a markdown page and lm.jsonl rows.

    python scripts/lm_table_report.py RUNS_DIR --rows "student_init lm_only ..." \
        --md bench/results/lm_sst2.md --jsonl bench/results/lm.jsonl

RUNS_DIR holds one run folder per row (named after the row). The teacher row is the teacher's
evaluation recorded in the first run (every LM run evaluates the teacher on the same held-out
set). Each row's command is rebuilt from the overrides Hydra recorded for its run. lm.jsonl gets
one JSON object per row, in the issue's format:
    {"task", "row", "metrics": {perplexity, bleu, rouge_l, cer, bleu_vs_teacher, cer_vs_teacher},
     "command", "commit", "machine"}
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from fadkd.paper_table import COLUMNS, _cell
from fadkd.results import overrides_of

JSONL_METRICS = ("perplexity", "bleu", "rouge_l", "cer", "bleu_vs_teacher", "cer_vs_teacher")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--rows", required=True, help="space-separated row names (run folders under RUNS)")
    parser.add_argument("--task", default="lm_sst2")
    parser.add_argument("--md", type=Path, required=True)
    parser.add_argument("--jsonl", type=Path, required=True)
    parser.add_argument("--script", default="scripts/lm_table.sh", help="the command that made the table")
    ns = parser.parse_args()

    runs = {name: ns.runs / name for name in ns.rows.split()}
    loaded = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    first = next(iter(runs))
    table = []  # (row, metrics, params, steps, seconds, command)
    teacher = loaded[first].get("teacher")
    if teacher:
        note = f"{command(runs[first])}   # the teacher, evaluated in the {first} run"
        table.append(("teacher", teacher, teacher.get("params"), None, None, note))
    for name, m in loaded.items():
        table.append((name, m["student"], m["params"]["student"], m["steps"], m["train_seconds"], command(runs[name])))

    stamp, head, where = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), commit(), machine()
    headers = ["Row", *COLUMNS, "Train s"]
    lines = [
        f"# Causal-LM distillation table ({ns.task})",
        "",
        f"- made by: `{ns.script}` ({stamp})",
        f"- commit: `{head}`",
        f"- machine: {where}",
        f"- teacher: {loaded[first].get('teacher_name')}; student: {loaded[first].get('student_name')}",
        "- BLEU and ROUGE-L 0-100, CER a fraction; vs teacher = against the teacher's own greedy continuation;",
        "  Tokens/s = greedy generation throughput; Steps = optimizer steps (0 = not trained).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for name, metrics, params, steps, seconds, _ in table:
        values = {**metrics, "params": params, "steps": steps}
        cells = [_cell(values.get(k), f) for k, f in COLUMNS.values()]
        lines.append("| " + " | ".join([name, *cells, "-" if seconds is None else f"{seconds:.0f}"]) + " |")
    lines += ["", "Commands:", ""] + [f"- {name}: `{cmd}`" for name, *_, cmd in table]
    ns.md.parent.mkdir(parents=True, exist_ok=True)
    ns.md.write_text("\n".join(lines) + "\n")

    ns.jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(ns.jsonl, "a") as f:
        for name, metrics, *_, cmd in table:
            row = {
                "task": ns.task,
                "row": name,
                "metrics": {k: metrics.get(k) for k in JSONL_METRICS},
                "command": cmd,
                "commit": head,
                "machine": where,
            }
            f.write(json.dumps(row) + "\n")
    print(f"wrote {ns.md}; appended {len(table)} rows to {ns.jsonl}")


if __name__ == "__main__":
    main()
