"""The three-task table of the shrink suite (issue 25): SST-2, MRPC and CoLA side by side, and the bar.

    .venv/bin/python scripts/shrink_summary.py [--out outputs/shrink] [--md bench/results/quality_shrink.md]

Reads the shrink lines of bench/results/quality.jsonl that the suite wrote for runs under --out (the
run folder is in each line's command, so the 24k-pool SST-2 runs of outputs/shrink32k stay apart), and
writes one table: each row's main metric per task (SST-2 accuracy, MRPC F1, CoLA MCC; ×100, mean ± std
over seeds), the three-task mean, the share of the teacher (mean of the per-task ratios), and the
three-task mean of the per-seed paired differences the bar is about. A task missing a row leaves
that row's three-task cells empty: no mean over fewer tasks is shown as if it were the mean over three.
"""

import argparse
import json
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from glue_suite import BEST_KD_DATA, LABELS, machine, main_metric, paired_differences, scored  # scripts/ is on sys.path

TASKS = ("sst2", "mrpc", "cola")
KD_ROWS = ("kd_only", "kd_only_long", "kd_only_data", "kd_only_data_long")


def read_lines(jsonl: Path, out: str) -> list[dict]:
    lines = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
    lines = [x for x in lines if x.get("suite") == "shrink" and f"hydra.run.dir={out}/{x['task']}/" in x["command"]]
    unique = {(x["task"], x["row"], x["seed"]): x for x in lines}  # a rerun's line replaces the older one
    return list(unique.values())


def row_mean(lines: list[dict], task: str, row: str) -> list[float]:
    return [100 * scored(x)[main_metric(task)] for x in lines if x["task"] == task and x["row"] == row]


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.fmean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def three_task_paired(lines: list[dict], row: str, base: str) -> tuple[str, float | None]:
    """Per task the mean paired difference (seeds), and their mean over the three tasks (None if a task lacks it)."""
    parts, means = [], []
    for task in TASKS:
        diffs = [d for _, d in paired_differences(lines, task, row, base)]
        parts.append(f"{task} {statistics.fmean(diffs):+.2f} (n={len(diffs)})" if diffs else f"{task} –")
        means.append(statistics.fmean(diffs) if diffs else None)
    total = None if None in means else statistics.fmean(means)
    return "; ".join(parts), total


def table(lines: list[dict], rows: list[str]) -> list[str]:
    teacher = {t: row_mean(lines, t, "teacher") for t in TASKS}
    out = ["| row | features | data | SST-2 acc | MRPC F1 | CoLA MCC | 3-task mean | % of teacher |"]
    out.append("|---|---|---|---|---|---|---|---|")
    for row in rows:
        per_task = [row_mean(lines, t, row) for t in TASKS]
        mine = [x for x in lines if x["row"] == row]
        flags = ["yes" if any(x.get(f) for x in mine) else "" for f in ("features", "data")]
        full = all(per_task)
        mean = f"{statistics.fmean(statistics.fmean(v) for v in per_task):.2f}" if full else "–"
        ratio = "–"
        if full and row != "teacher" and all(teacher.values()):
            ratio = (
                f"{100 * statistics.fmean(statistics.fmean(v) / teacher[t][0] for v, t in zip(per_task, TASKS)):.1f}"
            )
        out.append(
            f"| {LABELS.get(row, row)} | {' | '.join(flags)} | {' | '.join(map(cell, per_task))} | {mean} | {ratio} |"
        )
    return out


def bar(lines: list[dict], rows: list[str]) -> list[str]:
    """The issue's three comparisons, each as the three-task mean of per-seed paired differences."""
    feature_rows = [r for r in rows if r.startswith("recipe") and r.endswith("data")]
    out = ["| comparison | per task (mean of seeds) | 3-task mean | bar |", "|---|---|---|---|"]
    checks = [("recipe_data", "student_alone", 1.5), ("recipe_data", "kd_only", 0.5)]
    checks += [(r, BEST_KD_DATA, 0.5) for r in feature_rows]
    for row, base, need in checks:
        parts, total = three_task_paired(lines, row, base)
        label = "the better of kd_only_data, kd_only_data_long" if base == BEST_KD_DATA else base
        verdict = "–" if total is None else ("met" if total >= need else "not met")
        fewest = min(len(paired_differences(lines, t, row, base)) for t in TASKS)
        if total is not None and fewest < 3:  # a claim needs 3 seeds on every task
            verdict += f" so far (a task has {fewest} seed{'s' if fewest > 1 else ''}: not a claim)"
        shown = "–" if total is None else f"{total:+.2f}"
        out.append(f"| {row} − {label} | {parts} | {shown} | ≥ +{need}: {verdict} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/shrink", help="the suite's --out: only its runs are read")
    p.add_argument("--jsonl", type=Path, default=Path("bench/results/quality.jsonl"))
    p.add_argument("--md", type=Path, default=Path("bench/results/quality_shrink.md"))
    ns = p.parse_args()
    lines = read_lines(ns.jsonl, ns.out.rstrip("/"))
    order = ["teacher", "student_alone", "kd_only", "kd_only_long", "recipe", "kd_only_data", "kd_only_data_long"]
    rows = [r for r in order if any(x["row"] == r for x in lines)]
    rows += sorted({x["row"] for x in lines} - set(order))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    text = [
        "# Shrink suite: SST-2 (8k labels), MRPC, CoLA",
        "",
        f"- command: `.venv/bin/python scripts/shrink_summary.py --out {ns.out}` over the lines of {ns.jsonl}; "
        "each task's runs and their commands: bench/results/quality_shrink_<task>.md",
        f"- commit: `{head}` (each run's own commit is in its line); machine: {machine()}",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        "",
        "Dev ×100 after the last epoch, mean ± std over seeds (n in the per-task tables); the teacher: its saved "
        "checkpoint, the one that taught (its best dev step); % of teacher: the mean over the three tasks of "
        "row / teacher.",
        "",
        *table(lines, rows),
        "",
        "## The bar (three-task mean of the per-seed paired differences)",
        "",
        *bar(lines, rows),
        "",
    ]
    ns.md.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
