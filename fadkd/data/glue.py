"""GLUE split loaders and metrics (the task registry: fadkd/data/glue_tasks.py).

Local files are read in the original GLUE TSV layout (the one GLUE's download script
writes), because that is what people have on disk and what the shared test data uses.
Every loader returns the same schema - the task's ``text_columns`` plus ``label`` - so
that the training code never needs to know where the data came from.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from fadkd.data.glue_tasks import HUB_DEV_SPLIT, HUB_TEXT, LAYOUTS, STSB_RANGE, FileLayout, GlueTask, TaskError
from fadkd.eval import metrics as glue_metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

    import datasets

HUB_DATASET = "nyu-mll/glue"
ASSETS = Path(__file__).parents[1] / "assets"


def resolve_data_dir(data_dir: str) -> str | None:
    """task.data_dir: 'sample' -> the shipped SST-2 sample, 'hub' -> None (load from the Hub), else the path."""
    if data_dir == "sample":
        return str(ASSETS / "glue_sample")
    return None if data_dir == "hub" else data_dir


def load_split(
    task: GlueTask, split: str, data_dir: str | Path | None, max_samples: int | None = None
) -> datasets.Dataset:
    """Load one split as a Dataset with columns ``text_columns`` + ``label``.

    ``data_dir`` is a folder in GLUE layout (``data_dir/<task.folder>/<file>``); ``None``
    downloads from the Hugging Face Hub instead. ``max_samples`` keeps the first N rows.
    """
    if split not in task.splits:
        raise TaskError(f"task {task.name!r} has no split {split!r}; available splits: {', '.join(task.splits)}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise TaskError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    if data_dir is None:
        return _load_hub(task, split, max_samples)
    path = _split_path(task, split, Path(data_dir).expanduser())
    columns = _read_tsv(task, path, max_samples)
    if not columns["label"]:
        raise TaskError(
            f"{path}: split {split!r} of task {task.name!r} has no data rows; the file must hold at least one example"
        )
    import datasets

    return datasets.Dataset.from_dict(columns, features=_features(task))


def compute_metrics(task: GlueTask, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """Score predictions (class indices, or floats for STS-B) with the task's GLUE metrics."""
    try:
        preds = glue_metrics.as_1d_array(predictions, what="predictions", regression=task.is_regression)
        refs = glue_metrics.as_1d_array(labels, what="labels", regression=task.is_regression)
    except ValueError as exc:
        raise TaskError(f"{task.name}: {exc}") from None
    if len(preds) != len(refs):
        raise TaskError(f"{task.name}: got {len(preds)} predictions for {len(refs)} labels; they must match")
    if len(refs) == 0:
        raise TaskError(f"{task.name}: no examples to score")
    return glue_metrics.compute(task.metrics, preds, refs)


def _features(task: GlueTask) -> datasets.Features:
    """One schema for both sources, so cached/tokenized data does not depend on the source."""
    import datasets

    label = datasets.Value("float64") if task.is_regression else datasets.ClassLabel(names=list(task.label_names))
    return datasets.Features({**{c: datasets.Value("string") for c in task.text_columns}, "label": label})


def _split_path(task: GlueTask, split: str, root: Path) -> Path:
    """Resolve the split's file, saying exactly which level of the layout is missing."""
    file_name = task.splits[split]
    expected = f"<data dir>/{task.folder}/{file_name}"
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise TaskError(
            f"task.data_dir={root} {what}; point it at a folder laid out as {expected} "
            "(e.g. task.data_dir=../shared/data/glue), or task.data_dir=hub to download it from the Hub"
        )
    folder = root / task.folder
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise TaskError(
            f"{folder} not found: task {task.name!r} expects {expected}; "
            f"folders in {root}: {', '.join(present) or '(none)'}"
        )
    path = folder / file_name
    if not path.is_file():
        present = sorted(p.name for p in folder.iterdir())
        raise TaskError(
            f"{path} not found: split {split!r} of task {task.name!r} is read from {file_name}; "
            f"files in {folder}: {', '.join(present) or '(none)'}"
        )
    return path


def _read_tsv(task: GlueTask, path: Path, max_samples: int | None) -> dict[str, list]:
    """Parse a GLUE TSV file, validating every row.

    GLUE files use no quoting at all (rows may start with a bare ``"``), so quoting is
    off; ``utf-8-sig`` drops the BOM that GLUE writes at the start of MRPC's header.
    """
    layout = LAYOUTS[task.name]
    columns: dict[str, list] = {name: [] for name in (*task.text_columns, "label")}
    reader = None
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = layout.columns or tuple(next(reader, ()))
            if not header:
                raise TaskError(f"{path}: file is empty; expected a GLUE {task.folder} header line and data rows")
            text_pos, label_pos = _column_positions(task, layout, header, path)
            for row in reader:
                if len(row) != len(header):
                    raise TaskError(
                        f"{path}:{reader.line_num}: expected {len(header)} tab-separated columns, found "
                        f"{len(row)}; GLUE files are unquoted TSV, so check for a missing or extra tab "
                        "(e.g. a file re-saved by a spreadsheet) or a wrapped line"
                    )
                for name, pos in zip(task.text_columns, text_pos):
                    columns[name].append(row[pos])
                columns["label"].append(_parse_label(task, layout, row[label_pos], path, reader.line_num))
                if max_samples is not None and len(columns["label"]) >= max_samples:
                    break
    except UnicodeDecodeError as exc:  # the reader decodes ahead in blocks: count lines up to the bad byte
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
            line = 1
        except UnicodeDecodeError as found:
            line = raw[: found.start].count(b"\n") + 1
        raise TaskError(
            f"{path}:{line}: file is not valid UTF-8 ({exc.reason}); GLUE files are UTF-8, re-download or re-encode it"
        ) from None
    except csv.Error as exc:
        line = reader.line_num if reader is not None else 1
        raise TaskError(f"{path}:{line}: cannot parse row ({exc})") from None
    return columns


def _column_positions(task: GlueTask, layout: FileLayout, header: Sequence[str], path: Path) -> tuple[list[int], int]:
    needed = (*layout.text, layout.label)
    missing = [name for name in needed if name not in header]
    if missing:
        raise TaskError(
            f"{path}:1: header lacks column(s) {missing}; a GLUE {task.folder} file needs "
            f"{list(needed)} but the header is {list(header)} - is this the right file for "
            f"task {task.name!r}?"
        )
    return [header.index(name) for name in layout.text], header.index(layout.label)


def _parse_label(task: GlueTask, layout: FileLayout, raw: str, path: Path, line: int) -> int | float:
    """Map the file's label spelling to a class index (or a float score for STS-B)."""
    if task.is_regression:
        low, high = STSB_RANGE
        try:
            score = float(raw)
        except ValueError:
            score = float("nan")
        if not low <= score <= high:
            raise TaskError(
                f"{path}:{line}: score {raw!r} in column {layout.label!r} is not a number "
                f"between {low:g} and {high:g}; fix or remove the row"
            )
        return score
    if raw not in layout.raw_labels:
        allowed = ", ".join(repr(label) for label in layout.raw_labels)
        raise TaskError(
            f"{path}:{line}: unknown label {raw!r} in column {layout.label!r}; allowed labels for "
            f"task {task.name!r}: {allowed}; fix or remove the row"
        )
    return layout.raw_labels.index(raw)


def _load_hub(task: GlueTask, split: str, max_samples: int | None) -> datasets.Dataset:
    """Download from the Hub and rename columns to the local-file schema."""
    import datasets

    hub_split = "train" if split == "train" else HUB_DEV_SPLIT.get(task.name, "validation")
    try:
        data = datasets.load_dataset(HUB_DATASET, task.hub_config, split=hub_split)
    except Exception as exc:  # network, auth, cache: all mean "use local files instead"
        raise TaskError(
            f"could not load {HUB_DATASET} config {task.hub_config!r} split {hub_split!r} from "
            f"the Hugging Face Hub ({type(exc).__name__}: {exc}); check network access, or "
            "pass a local GLUE data directory"
        ) from exc
    hub_names = getattr(data.features.get("label"), "names", None)
    if not task.is_regression and list(hub_names or ()) != list(task.label_names):
        raise TaskError(
            f"{HUB_DATASET}/{task.hub_config} labels are {hub_names}, expected "
            f"{list(task.label_names)}; the Hub dataset changed, use a local GLUE data directory"
        )
    renames = {src: dst for src, dst in zip(HUB_TEXT[task.name], task.text_columns) if src != dst}
    data = data.rename_columns(renames).select_columns([*task.text_columns, "label"])
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    if len(data) == 0:
        raise TaskError(f"{HUB_DATASET}/{task.hub_config} split {hub_split!r} is empty")
    return data.cast(_features(task))
