"""The training rows of a GLUE run: labelled rows, teacher-labelled copies and an unlabelled pool.

TinyBERT's and DistilBERT's gains come from data the *teacher* labels, at scale. A GLUE run's rows are

1. the labelled rows: the first `task.max_train_samples` of train.tsv (all of them when unset);
2. `task.augment=N` perturbed copies of each labelled row (fadkd/data/augment.py: EDA word drop and swap;
   fadkd/data/lm_augment.py: words replaced by a local causal LM's proposals, TinyBERT's manner);
3. the unlabelled pool: `task.unlabelled_rows=N` more training rows with their labels hidden (to
   measure "few labels, much text" on a GLUE set), and/or the texts of `task.unlabelled_file`
   (.tsv with a header naming the task's text columns, .jsonl with those keys, or .txt with one
   text per line for single-sentence tasks).

Copies and pool rows carry no hard label (-100, NaN for regression): the task loss skips them and
every teacher term uses them. Every train.seed gets the same rows, so one teacher cache serves all.
"""

import csv
import json
import math
from pathlib import Path

from fadkd.config.schema import Config
from fadkd.data.augment import UNLABELLED, augment_rows
from fadkd.data.glue import load_split
from fadkd.data.glue_tasks import GlueTask, TaskError
from fadkd.data.lm_augment import lm_copies


def training_rows(cfg: Config, task: GlueTask, data_dir: str | None, log=print) -> list[dict]:
    """Labelled rows, then their copies, then the unlabelled pool (each row with its `_index`)."""
    t = cfg.task
    rows = load_split(task, "train", data_dir, t.max_train_samples).to_list()
    labelled = len(rows)
    if t.augment and t.augment_method == "lm":
        rows += lm_copies(rows, task, cfg, log)
    elif t.augment:
        rows = augment_rows(rows, task.text_columns, t.augment, t.augment_p, t.augment_seed, task.is_regression)
    copies = len(rows) - labelled
    pool = []
    if t.unlabelled_rows:
        pool += hidden_label_rows(task, data_dir, labelled, t.unlabelled_rows)
    if t.unlabelled_file:
        pool += read_unlabelled(task, Path(t.unlabelled_file).expanduser())
    rows += [{**row, "label": math.nan if task.is_regression else UNLABELLED} for row in pool]
    if copies or pool:
        method = f" ({t.augment_method})" if copies else ""
        log(
            f"training rows: {labelled} labelled, {copies} teacher-labelled copies{method}, {len(pool)} unlabelled; "
            f"the task loss reads the {labelled} labelled, the teacher's terms all {len(rows)}"
        )
    return [{**row, "_index": i} for i, row in enumerate(rows)]


def hidden_label_rows(task: GlueTask, data_dir: str | None, start: int, count: int) -> list:
    """Training rows start..start+count-1, whose labels the run will not see."""
    rows = load_split(task, "train", data_dir, start + count).to_list()[start:]
    if not rows:
        raise TaskError(
            f"task.unlabelled_rows={count}: the training split has no rows after the first {start}; "
            "lower task.max_train_samples"
        )
    return [{c: row[c] for c in task.text_columns} for row in rows]


def read_unlabelled(task: GlueTask, path: Path) -> list[dict]:
    """Texts in the task's columns from a .tsv (header), .jsonl or .txt (single-sentence tasks) file."""
    columns = task.text_columns
    if not path.is_file():
        raise TaskError(f"task.unlabelled_file={path}: no such file; give a .tsv, .jsonl or .txt file of texts")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if path.suffix == ".txt":
                if len(columns) != 1:
                    raise TaskError(
                        f"task.unlabelled_file={path}: a .txt file holds one text per line, but task "
                        f"'{task.name}' reads {len(columns)} ({', '.join(columns)}); use a .tsv or .jsonl file"
                    )
                rows = [{columns[0]: line.rstrip("\n")} for line in handle if line.strip()]
            elif path.suffix == ".jsonl":
                rows = [_json_row(line, columns, path, n) for n, line in enumerate(handle, 1) if line.strip()]
            elif path.suffix == ".tsv":
                reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                missing = [c for c in columns if c not in (reader.fieldnames or [])]
                if missing:
                    raise TaskError(
                        f"{path}:1: the header has no column {', '.join(missing)}; task '{task.name}' reads "
                        f"{', '.join(columns)}"
                    )
                rows = [{c: row[c] or "" for c in columns} for row in reader]
            else:
                raise TaskError(f"task.unlabelled_file={path}: unknown kind; use .tsv, .jsonl or .txt")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not valid UTF-8 ({exc.reason}); re-encode it as UTF-8") from None
    if not rows:
        raise TaskError(f"task.unlabelled_file={path} holds no text")
    return rows


def _json_row(line: str, columns: tuple[str, ...], path: Path, number: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
    missing = [c for c in columns if not isinstance(row, dict) or not isinstance(row.get(c), str)]
    if missing:
        raise TaskError(f"{path}:{number}: no text field {', '.join(missing)}; each line needs {', '.join(columns)}")
    return {c: row[c] for c in columns}
