"""`fadkd table --layout paper`: causal-LM runs in the paper's table layout.

One row for the teacher (its held-out metrics, from the first run that evaluated it), then one
per run (its best student), in the order the paths are given:

    Model | Perplexity | BLEU | ROUGE-L | CER | BLEU vs teacher | CER vs teacher | Params | Tokens/s | Steps

BLEU and ROUGE-L on a 0-100 scale, CER as a fraction (fadkd/eval/lm.py defines each);
Tokens/s is greedy generation throughput. Writes paper.md and paper.csv (unrounded numbers).
"""

import csv
from pathlib import Path

from rich.table import Table

from fadkd.errors import FadkdError
from fadkd.report.runs import find_runs, read_metrics
from fadkd.run.progress import make_console

COLUMNS = {  # header -> (metrics key, format)
    "Perplexity": ("perplexity", "{:.2f}"),
    "BLEU": ("bleu", "{:.2f}"),
    "ROUGE-L": ("rouge_l", "{:.2f}"),
    "CER": ("cer", "{:.3f}"),
    "BLEU vs teacher": ("bleu_vs_teacher", "{:.2f}"),
    "CER vs teacher": ("cer_vs_teacher", "{:.3f}"),
    "Params": ("params", None),
    "Tokens/s": ("tokens_per_s", "{:.1f}"),
    "Steps": ("steps", "{}"),
}


def _ordered_runs(paths: list[Path]) -> list[Path]:
    runs: list[Path] = []
    for path in paths:
        runs += [r for r in find_runs([path]) if r not in runs]
    return runs


def paper_rows(paths: list[Path]) -> list[dict]:
    """The teacher row, then one row per run: {"Model": name, metric key: value, ...}."""
    rows, teacher = [], None
    for run in _ordered_runs(paths):
        m = read_metrics(run)
        student = m.get("student") or {}
        if "perplexity" not in student:
            continue
        if teacher is None and (m.get("teacher") or {}).get("perplexity") is not None:
            params = m["teacher"].get("params") or m["params"].get("teacher")
            teacher = {"Model": f"teacher ({m.get('teacher_name')})", **m["teacher"], "params": params, "steps": None}
        rows.append({"Model": run.name, **student, "params": m["params"]["student"], "steps": m["steps"]})
    if not rows:
        raise FadkdError(
            f"no causal-LM runs (metrics with perplexity) under {', '.join(map(str, paths))}; --layout paper is "
            "for runs of task=lm_*; use the default layout for GLUE runs"
        )
    return ([teacher] if teacher else []) + rows


def _cell(value, fmt: str | None) -> str:
    if value is None:
        return "-"
    if fmt is None:  # parameter counts
        return f"{value / 1e6:.1f}M" if value >= 1e6 else f"{value / 1e3:.0f}K"
    return fmt.format(value)


def write_paper_table(paths: list[Path], out_dir: Path | None = None) -> Path:
    rows = paper_rows(paths)
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    out_dir = out_dir or root or Path.cwd()
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = ["Model", *COLUMNS]
    cells = [[row["Model"], *(_cell(row.get(k), f) for k, f in COLUMNS.values())] for row in rows]
    table = Table(title="fadkd causal-LM results (paper layout; BLEU, ROUGE-L 0-100, CER a fraction)")
    for h in headers:
        table.add_column(h, overflow="fold")
    for line in cells:
        table.add_row(*line)
    make_console().print(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    (out_dir / "paper.md").write_text("\n".join(lines) + "\n")
    with open(out_dir / "paper.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", *(k for k, _ in COLUMNS.values())])
        writer.writerows([row["Model"], *(row.get(k) for k, _ in COLUMNS.values())] for row in rows)
    make_console().print(f"wrote {out_dir / 'paper.md'} and {out_dir / 'paper.csv'}")
    return out_dir
