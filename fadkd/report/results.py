"""Results tables over finished runs: rich in the terminal, plus results.md and results.csv."""

import csv
from pathlib import Path

from rich.table import Table

from fadkd.data.lm_text import LOWER_IS_BETTER
from fadkd.report.paper_table import write_paper_table
from fadkd.report.runs import find_runs, overrides_of, read_metrics
from fadkd.run.progress import make_console


def _parse(overrides: list[str]) -> dict[str, str]:
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)


def _run_name(run: Path, root: Path | None) -> str:
    """Multirun jobs by their number; other runs by their folder."""
    if root and run.parent == root and run.name.split("_", 1)[0].isdigit():
        name = run.name.split("_", 1)[0]
    else:
        name = str(run.relative_to(root) if root else run)
    return name if len(name) <= 40 else "..." + name[-37:]


def collect(runs: list[Path], root: Path | None) -> tuple[list[str], list[dict], dict[str, str]]:
    """One row per run: the swept values, the student's dev metrics, the teacher's main metric
    (teacher_score: the teacher's dev score on the task's main metric, when a teacher was used).

    Overrides that differ between runs become columns; those shared by all runs are returned
    separately (shown once under the table).
    """
    loaded = [(run, read_metrics(run), _parse(overrides_of(run))) for run in runs]
    keys = sorted({k for _, _, o in loaded for k in o})
    swept = [k for k in keys if len({o.get(k) for _, _, o in loaded}) > 1]
    common = {k: loaded[0][2][k] for k in keys if k not in swept}
    rows, metric_names = [], []
    for run, m, overrides in loaded:
        student = m.get("student") or {}
        metric_names += [name for name in student if name not in metric_names]
        teacher = m.get("teacher") or {}
        rows.append(
            {
                "run": _run_name(run, root),
                "task": m.get("task", "-"),
                **{k: overrides.get(k, "-") for k in swept},
                **student,
                "main_metric": m.get("main_metric", "-"),
                "teacher_score": teacher.get(m.get("main_metric")),
                "student_params": (m.get("params") or {}).get("student"),
                "steps": m.get("steps"),
                "train_s": m.get("train_seconds"),
            }
        )
    sign = {True: 1, False: -1}  # best first: lowest perplexity, highest accuracy; missing values last
    rows.sort(key=lambda r: float("inf") if r.get(r["main_metric"]) is None else
              sign[r["main_metric"] in LOWER_IS_BETTER] * r[r["main_metric"]])  # fmt: skip
    columns = ["run", "task", *swept, *metric_names, "teacher_score", "student_params", "steps", "train_s"]
    return columns, rows, common


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and len(value) > 8:  # a swept value Optuna drew: 0.749080237694725 -> 0.7491
        try:
            return f"{float(value):.4g}"
        except ValueError:
            return value
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_table(paths: list[Path], out_dir: Path | None = None, layout: str = "default") -> Path:
    """Print the table and write results.md / results.csv; returns the folder written to.

    layout="paper": causal-LM runs in the paper's layout (fadkd/report/paper_table.py).
    """
    if layout == "paper":
        return write_paper_table(paths, out_dir)
    runs = find_runs(paths)
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    columns, rows, common = collect(runs, root)
    out_dir = out_dir or root or Path.cwd()

    shared = " ".join(f"{k}={v}" for k, v in common.items())
    table = Table(
        title=f"fadkd results ({len(rows)} runs, best first by each task's main metric)",
        caption=f"all runs: {shared}" if shared else None,
    )
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    make_console().print(table)

    lines = [f"All runs: `{shared}`", ""] if shared else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    make_console().print(f"wrote {out_dir / 'results.md'} and {out_dir / 'results.csv'}")
    return out_dir
