"""The training progress: a rich bar on a terminal, plain lines anywhere else.

When stdout is a log file, `tee`, CI or a cluster job, a live bar prints once at the end, cut
to the console's width; `PlainProgress` prints one full line instead every
FADKD_PROGRESS_SECONDS (default 10) seconds and at the end, and `make_console` never wraps
a line (commands and paths stay copyable) nor squeezes a table into 80 columns.
"""

import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PIPE_WIDTH = 200  # columns a table may use when the output is not a terminal


def make_console(stderr: bool = False) -> Console:
    """A console that does not hard-wrap; outside a terminal, tables get PIPE_WIDTH columns."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


class PlainProgress:
    """The subset of rich's Progress the loop uses, as plain lines at a steady rate."""

    def __init__(self, console: Console, every: float | None = None) -> None:
        self.console = console
        self.every = float(os.environ.get("FADKD_PROGRESS_SECONDS", "10")) if every is None else every
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> "PlainProgress":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        for task_id, task in self.tasks.items():
            if task["printed"] != task["completed"]:
                self._line(task_id)

    def add_task(self, description: str, total: int, completed: int = 0, **fields) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {"description": description, "total": total, "completed": completed,
                               "fields": fields, "printed": completed, "last": time.perf_counter()}  # fmt: skip
        return task_id

    def update(self, task_id: int, completed: int | None = None, **fields) -> None:
        task = self.tasks[task_id]
        task["fields"].update(fields)
        if completed is None:
            return
        task["completed"] = completed
        now = time.perf_counter()
        if completed >= task["total"] or now - task["last"] >= self.every:
            self._line(task_id)

    def _line(self, task_id: int) -> None:
        task = self.tasks[task_id]
        elapsed = int(time.perf_counter() - self.started)
        clock = f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        terms = task["fields"].get("terms", "")
        self.console.print(
            f"{task['description']} step {task['completed']}/{task['total']}  {clock}  {terms}".rstrip(),
            highlight=False,
            markup=False,
        )
        task["printed"], task["last"] = task["completed"], time.perf_counter()


def progress_bar(console: Console) -> Progress | PlainProgress:
    if not console.is_terminal:
        return PlainProgress(console)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[terms]}"),
        console=console,
    )
