"""Time and size of student.init=pruned on the real models: bench/results/pruning.md and pruning.jsonl.

Each row is one `fadkd train ... student=pruned ... train.max_steps=0` run (prune, evaluate, no training): the
seconds pruning took (calibration included, wall and CPU), the parameters before and after (total and
non-embedding) and the dev metric right after pruning beside the teacher's, read from the run's
prune_report.json. A run whose folder already holds its report is not run again.

    .venv/bin/python scripts/pruning_bench.py --glue ../shared/data/glue --out bench/runs/pruning
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

FADKD = str(Path(sys.executable).with_name("fadkd"))
MINILM = "experiment=ablation_student_alone student=pruned teacher=minilm-l6 task=sst2 task.max_train_samples=8000 "
MINILM += "train=pretrained train.max_steps=0 train.num_threads=1"
SMOL = "task=lm_sst2 teacher=smollm2-135m student=pruned train=lm train.batch_size=8 task.block_size=128 "
SMOL += "task.max_eval_samples=872 task.eval_samples=8 task.max_new_tokens=32 experiment=ablation_student_alone "
SMOL += "train.max_steps=0 train.num_threads=1"
ROWS = {
    "minilm_half": f"{MINILM} student.prune.heads=6 student.prune.hidden=192 student.prune.ffn=768",
    "minilm_ffn384": f"{MINILM} student.prune.ffn=384",
    "smollm2_64m": f"{SMOL} student.prune.heads=6 student.prune.hidden=384 student.prune.ffn=960 "
    "student.prune.calibration_rows=128",
}


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, torch {torch.__version__}, {platform.system()}"


def run(name: str, args: str, glue: str, out: Path, teacher: str | None) -> tuple[str, dict]:
    folder = out / name
    if teacher and name.startswith("minilm"):  # the SST-2 fine-tuned teacher (else its head is fresh: chance)
        args = args.replace("teacher=minilm-l6", f"teacher=minilm-l6 teacher.path={teacher}")
    command = f"fadkd train {args} task.data_dir={glue} hydra.run.dir={folder}"
    if not (folder / "prune_report.json").is_file():
        subprocess.run([FADKD, *shlex.split(command)[1:]], check=True)
    return command, json.loads((folder / "prune_report.json").read_text())


def row(name: str, command: str, r: dict) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "suite": "pruning", "row": name, "command": command, "commit": commit, "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "seconds": r["seconds"],
        "cpu_seconds": r.get("cpu_seconds"), "calibration": r["calibration"], "shape": r["shape"],
        "parameters": r["parameters"], "dev": r["dev"], "kept_layers": r["kept"]["layers"],
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    head = "| row | shape (layers, hidden, heads/kv, ffn) | params total | non-embedding | prune s (CPU s) | "
    head += "calibration tokens | teacher dev | after pruning |\n|---|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        s, p = r["shape"]["student"], r["parameters"]
        metric = next(iter(r["dev"]["teacher"]))
        lines.append(
            f"| {r['row']} | {s['layers']}, {s['hidden']}, {s['heads']}/{s['kv_heads']}, {s['ffn']} | "
            f"{p['teacher']['total'] / 1e6:.1f}M → {p['student']['total'] / 1e6:.2f}M | "
            f"{p['teacher']['non_embedding'] / 1e6:.1f}M → {p['student']['non_embedding'] / 1e6:.2f}M | "
            f"{r['seconds']:.0f} ({r['cpu_seconds']:.0f}) | {r['calibration']['tokens']:,} | "
            f"{metric} {r['dev']['teacher'][metric]:.4g} | {r['dev']['student_after_pruning'][metric]:.4g} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glue", default="../shared/data/glue")
    ap.add_argument("--out", type=Path, default=Path("bench/runs/pruning"))
    ap.add_argument("--rows", nargs="*", default=list(ROWS))
    ap.add_argument("--results", type=Path, default=Path("bench/results"))
    ap.add_argument("--minilm-teacher", help="all-MiniLM-L6-v2 fine-tuned on SST-2, for the minilm rows")
    ns = ap.parse_args()
    rows = [row(name, *run(name, ROWS[name], ns.glue, ns.out, ns.minilm_teacher)) for name in ns.rows]
    with (ns.results / "pruning.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    print(table(rows))


if __name__ == "__main__":
    main()
