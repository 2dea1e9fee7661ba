"""The run folder: one run per folder, and the files `fadkd train` leaves there.

config.yaml, steps.jsonl and evals.jsonl (fadkd/logs.py), checkpoints/ (fadkd/checkpoint.py),
and from here: student/ (Hugging Face folder of the best student), projections.safetensors
(the learned width projections, beside the student, not inside it) and metrics.json.
"""

import shutil
from pathlib import Path

from safetensors.torch import save_file

from fadkd.checkpoint import TrainState, safe_dir
from fadkd.config import Config
from fadkd.errors import FadkdError
from fadkd.losses import DistillLoss
from fadkd.models import count_parameters

RUN_FILES = ("config.yaml", "steps.jsonl", "evals.jsonl", "metrics.json", "student", "projections.safetensors")


def prepare_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder unless asked to resume or overwrite."""
    out_dir.mkdir(parents=True, exist_ok=True)
    found = [name for name in (*RUN_FILES, "checkpoints") if (out_dir / name).exists()]
    if resume and not (out_dir / "checkpoints").is_dir():
        raise FadkdError(f"train.resume=true but {out_dir} holds no checkpoints/; start without train.resume")
    if found and not resume:
        if not overwrite:
            raise FadkdError(
                f"{out_dir} already holds a run ({', '.join(found)}); continue it with train.resume=true, "
                "replace it with train.overwrite=true, or choose another hydra.run.dir"
            )
        for name in found:
            path = safe_dir(out_dir, name)
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def save_student(student, tokenizer, loss_fn: DistillLoss, out_dir: Path) -> None:
    """The student as a standard HF folder; projections beside it, not inside it."""
    folder = safe_dir(out_dir, "student")
    student.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in loss_fn.state_dict().items()}
    if state:
        save_file(state, str(out_dir / "projections.safetensors"))


def run_metrics(
    cfg: Config,
    task,
    state: TrainState,
    last: dict | None,
    teacher_metrics: dict | None,
    student,
    teacher,
    loss_fn: DistillLoss,
    pairs: list,
    elapsed: float,
    seen: int,
) -> dict:
    """What metrics.json holds: the best and final student's dev metrics, sizes, speed, the objective."""
    return {
        "task": task.name,
        "main_metric": task.main_metric,
        "student": state.best,
        "best_step": state.best_step,
        "student_final": last,
        "teacher": teacher_metrics,
        "teacher_name": cfg.teacher.name if teacher_metrics is not None else None,
        "student_name": cfg.student.name,
        "params": {"student": count_parameters(student), "teacher": teacher_params(cfg, teacher)},
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "train_seconds": elapsed,
        "samples_per_s": seen / max(elapsed, 1e-9),
        "loss_formula": str(loss_fn),
        "mapping": [[p.student, p.teacher, p.weight] for p in pairs],
    }


def teacher_params(cfg: Config, teacher) -> int | None:
    """Parameter count of the teacher (from the cache's record when it was not loaded)."""
    if teacher is None:
        return None
    if teacher.model is not None:
        return count_parameters(teacher.model)
    return teacher.cache.meta.get("teacher_params")
