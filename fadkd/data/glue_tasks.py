"""The GLUE task registry: each task's columns, labels, metrics and file layout, looked up by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from fadkd.errors import FadkdError


class TaskError(FadkdError):
    """A problem the user can fix: bad task name, missing file, malformed row, ...

    A FadkdError, so the CLI prints it without a traceback.
    """


@dataclass(frozen=True)
class GlueTask:
    """What the rest of fadkd needs to know about one GLUE task."""

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str
    splits: dict[str, str] = field(hash=False)  # excluded from hash so tasks stay hashable
    hub_config: str

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)


@dataclass(frozen=True)
class FileLayout:
    """Where a task's fields sit in its GLUE TSV files, by header name.

    Looking columns up by name (rather than fixed index) is what lets one reader cope
    with MNLI, whose train files have 12 columns and dev files 16.
    """

    text: tuple[str, ...]  # header names of the text columns, in ``text_columns`` order
    label: str  # header name of the label column
    raw_labels: tuple[str, ...] = ()  # label spellings in class-index order; () = float score
    columns: tuple[str, ...] | None = None  # column names of a header-less file (CoLA)


_SINGLE = ("sentence",)
_PAIR = ("sentence1", "sentence2")
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("entailment", "neutral", "contradiction")
_ACC = ("accuracy",)
_ACC_F1 = ("accuracy", "f1")


def _splits(dev: str = "dev.tsv") -> dict[str, str]:
    return {"train": "train.tsv", "dev": dev}


TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "cola",
            "CoLA",
            _SINGLE,
            ("unacceptable", "acceptable"),
            ("matthews_correlation",),
            "matthews_correlation",
            _splits(),
            "cola",
        ),
        GlueTask("sst2", "SST-2", _SINGLE, ("negative", "positive"), _ACC, "accuracy", _splits(), "sst2"),
        GlueTask("mrpc", "MRPC", _PAIR, ("not_equivalent", "equivalent"), _ACC_F1, "f1", _splits(), "mrpc"),
        GlueTask("stsb", "STS-B", _PAIR, (), ("pearson", "spearmanr"), "pearson", _splits(), "stsb"),
        GlueTask("qqp", "QQP", _PAIR, ("not_duplicate", "duplicate"), _ACC_F1, "f1", _splits(), "qqp"),
        GlueTask("mnli", "MNLI", _PAIR, _NLI3, _ACC, "accuracy", _splits("dev_matched.tsv"), "mnli"),
        GlueTask("mnli_mm", "MNLI", _PAIR, _NLI3, _ACC, "accuracy", _splits("dev_mismatched.tsv"), "mnli"),
        GlueTask("qnli", "QNLI", _PAIR, _NLI2, _ACC, "accuracy", _splits(), "qnli"),
        GlueTask("rte", "RTE", _PAIR, _NLI2, _ACC, "accuracy", _splits(), "rte"),
        GlueTask("wnli", "WNLI", _PAIR, ("not_entailment", "entailment"), _ACC, "accuracy", _splits(), "wnli"),
    )
}

LAYOUTS: dict[str, FileLayout] = {
    "cola": FileLayout(_SINGLE, "label", _BINARY, columns=("source", "label", "mark", "sentence")),
    "sst2": FileLayout(_SINGLE, "label", _BINARY),
    "mrpc": FileLayout(("#1 String", "#2 String"), "Quality", _BINARY),
    "stsb": FileLayout(_PAIR, "score"),
    "qqp": FileLayout(("question1", "question2"), "is_duplicate", _BINARY),
    "mnli": FileLayout(_PAIR, "gold_label", _NLI3),
    "mnli_mm": FileLayout(_PAIR, "gold_label", _NLI3),
    "qnli": FileLayout(("question", "sentence"), "label", _NLI2),
    "rte": FileLayout(_PAIR, "label", _NLI2),
    "wnli": FileLayout(_PAIR, "label", _BINARY),
}

# Text column names in the Hub dataset, renamed to ``text_columns`` on load.
HUB_TEXT: dict[str, tuple[str, ...]] = {
    "cola": _SINGLE,
    "sst2": _SINGLE,
    "mrpc": _PAIR,
    "stsb": _PAIR,
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "mnli_mm": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": _PAIR,
    "wnli": _PAIR,
}
HUB_DEV_SPLIT = {"mnli": "validation_matched", "mnli_mm": "validation_mismatched"}

STSB_RANGE = (0.0, 5.0)


def _normalize(name: str) -> str:
    """Lets users type the folder spelling too ("SST-2", "STS-B", "mnli-mm")."""
    return name.strip().lower().replace("-", "").replace("_", "")


def get_task(name: str) -> GlueTask:
    """Look a task up by name, case- and dash-insensitively."""
    by_key = {_normalize(task_name): task for task_name, task in TASKS.items()}
    task = by_key.get(_normalize(name))
    if task is None:
        raise TaskError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}")
    return task
