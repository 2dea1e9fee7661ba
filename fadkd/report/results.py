"""Results tables over finished runs: rich in the terminal, plus results.md and results.csv."""

import csv
from pathlib import Path

from rich.table import Table

from fadkd.data.lm_text import LOWER_IS_BETTER, is_lm_task
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
                "_metrics": list(student),
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


FIXED = ("run", "task")
FAMILY_NAMES = {"glue": "GLUE", "lm": "causal-LM"}
TERMINAL_LM = ("perplexity", "bleu", "rouge_l", "cer")  # the terminal's LM columns; the files hold every one


def _families(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault("lm" if is_lm_task(str(row["task"])) else "glue", []).append(row)
    return out


def metric_set(rows: list[dict]) -> set[str]:
    """The names of the students' dev metrics over all rows (the columns between the swept ones and teacher_score)."""
    return {k for row in rows for k in row.get("_metrics", ())}


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
    lines = [f"All runs: `{shared}`", ""] if shared else []
    for family, group in _families(rows).items():  # GLUE and causal-LM runs: one table each, own columns
        used = [c for c in columns if c in FIXED or any(row.get(c) is not None for row in group)]
        shown = [c for c in used if family == "glue" or c not in metric_set(rows) or c in TERMINAL_LM]
        note = "; BLEU and ROUGE 0-100, CER 0-1; every metric in results.md / results.csv" if family == "lm" else ""
        table = Table(
            title=f"fadkd results: {len(group)} {FAMILY_NAMES[family]} run(s), best first by each task's main "
            f"metric{note}",
            caption=f"all runs: {shared}" if shared else None,
        )
        for col in shown:
            table.add_column(col, overflow="fold")
        for row in group:
            table.add_row(*[_cell(row.get(c)) for c in shown])
        make_console().print(table)
        lines += [f"### {FAMILY_NAMES[family]} runs", ""] if len(_families(rows)) > 1 else []
        lines += ["| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in used) + " |" for row in group] + [""]
    (out_dir / "results.md").write_text("\n".join(lines).rstrip("\n") + "\n")
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    make_console().print(f"wrote {out_dir / 'results.md'} and {out_dir / 'results.csv'}")
    return out_dir
