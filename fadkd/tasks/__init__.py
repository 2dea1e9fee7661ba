"""Task definitions: which data to load and how to score it."""

from fadkd.tasks.glue import (
    TASKS,
    GlueTask,
    TaskError,
    compute_metrics,
    get_task,
    load_split,
)

__all__ = ["TASKS", "GlueTask", "TaskError", "compute_metrics", "get_task", "load_split"]
