"""The run folder: one run per folder, and the files `fadkd train` leaves there.

config.yaml, steps.jsonl and evals.jsonl (fadkd/run/logs.py), checkpoints/ (fadkd/run/checkpoint.py),
and from here: student/ (Hugging Face folder of the best student), projections.safetensors
(the learned width projections, beside the student, not inside it) and metrics.json.
"""

import fcntl
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import save_file

from fadkd.config.schema import Config
from fadkd.errors import FadkdError
from fadkd.losses.distill import DistillLoss
from fadkd.models.load import count_parameters
from fadkd.run.checkpoint import TrainState, safe_dir


class RunDirError(FadkdError):
    """The run folder is in use, holds another run, or holds the run with other settings."""

    run_dir: Path | None = None  # set when the run's resume command would help


RUN_FILES = ("config.yaml", "steps.jsonl", "evals.jsonl", "metrics.json", "student", "projections.safetensors")


def prepare_run_dir(out_dir: Path, cfg: Config) -> None:
    """Lock the folder, refuse to mix two runs in it, and write config.yaml.

    Resuming compares the settings with the run's config.yaml and refuses changed ones unless
    train.resume=force. A crashed run leaves no stale lock: the kernel drops it with the process.
    """
    resume, overwrite = cfg.train.resume, cfg.train.overwrite
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"{out_dir} is a file, not a folder; choose another hydra.run.dir") from None
    lock_run_dir(out_dir)
    found = [name for name in (*RUN_FILES, "checkpoints") if (out_dir / name).exists()]
    if not _trained(out_dir, found):  # what a run refused before its first step leaves: nothing to lose
        found = []
    restartable = any((out_dir / "checkpoints").glob("step-*"))
    if resume and not restartable:
        again = "start it again with train.overwrite=true" if found else "start without train.resume"
        raise RunDirError(
            f"train.resume={str(resume).lower()} but {out_dir} holds no checkpoints/ to continue from; {again}"
        )
    if found and not resume:
        if not overwrite:
            what = (
                "continue it with train.resume=true, replace it"
                if restartable
                else "it stopped before its first checkpoint: replace it"
            )
            raise RunDirError(
                f"{out_dir} already holds a run ({', '.join(found)}); {what} with train.overwrite=true, "
                "or choose another hydra.run.dir"
            )
        for name in found:
            path = safe_dir(out_dir, name)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    text = OmegaConf.to_yaml(OmegaConf.create(asdict(cfg)))
    if resume and (out_dir / "config.yaml").is_file():
        check_same_settings(out_dir, OmegaConf.load(out_dir / "config.yaml"), OmegaConf.create(text), resume)
    (out_dir / "config.yaml").write_text(text)


def _trained(out_dir: Path, found: list[str]) -> bool:
    """Whether the folder holds more than a config.yaml and empty logs: a config refused while the run was being
    built (a layer out of range, a missing file) leaves those, and the corrected command must not need
    train.overwrite=true to start."""
    left = [out_dir / name for name in found if name != "config.yaml"]
    return any(path.is_dir() or path.stat().st_size > 0 for path in left)


_LOCKS: dict[Path, int] = {}  # run folders this process holds: file descriptors kept open until exit


def lock_run_dir(out_dir: Path) -> None:
    """An exclusive lock on <out_dir>/.lock for this process's life; refused while another run holds it."""
    key = out_dir.resolve()
    if key in _LOCKS:
        return
    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(
            f"{out_dir} is in use by another fadkd run (pid {pid}) that is still training; wait for it to end "
            "or stop it (Ctrl-C, which checkpoints) before resuming, or choose another hydra.run.dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[key] = fd


# Keys a resumed run may change: where and how long it runs, and what it records, not what it computes.
IGNORED_ON_RESUME = {f"train.{k}" for k in (
    "resume", "overwrite", "num_threads", "device", "max_steps", "epochs", "eval_every", "log_every",
    "checkpoint_every", "keep_checkpoints", "logger", "save_student", "eval_batch_size", "on_nonfinite",
    "max_nonfinite_skips",
)} | {"cache.dir"}  # fmt: skip


# Student keys that change the checkpoint's tensors: train.resume=force refuses them too (and task.name).
SHAPE_KEYS = {"path", "arch", "num_layers", "hidden_size", "num_heads", "intermediate_size", "max_position_embeddings",
              "num_kv_heads", "init", "keep_layers", "every_k", "layers_from"}  # fmt: skip


def _flat(node, prefix: str = "") -> dict[str, object]:
    if not OmegaConf.is_dict(node):
        return {prefix[:-1]: OmegaConf.to_container(node) if OmegaConf.is_config(node) else node}
    out = {}
    for key in node:
        out.update(_flat(node[key], f"{prefix}{key}."))
    return out


def check_same_settings(out_dir: Path, old, new, resume) -> None:
    """Refuse to resume with settings that differ from the run's config.yaml, unless resume == "force"."""
    before, after = _flat(old), _flat(new)
    defaults = _flat(OmegaConf.structured(Config))
    for key in after.keys() - before.keys():  # a key added to fadkd after the run started, left at its default
        if key in defaults and defaults[key] == after[key]:
            before[key] = after[key]
    changed = [
        k for k in sorted(before.keys() | after.keys()) if k not in IGNORED_ON_RESUME and before.get(k) != after.get(k)
    ]
    if not changed:
        return
    listing = "; ".join(f"{k}: {before.get(k, '(absent)')} -> {after.get(k, '(absent)')}" for k in changed[:8])
    listing += f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
    fixed = [k for k in changed if k == "task.name" or k.removeprefix("student.") in SHAPE_KEYS]
    if resume == "force" and fixed:
        raise RunDirError(
            f"train.resume=force cannot continue {out_dir} with other "
            + "; ".join(f"{k} ({before.get(k)} -> {after.get(k)})" for k in fixed)
            + ": its checkpoints hold a student of that task and shape (head, labels, layers), which cannot train "
            "as another one; start a new run in another hydra.run.dir, or resume with the run's own values"
        )
    if resume == "force":
        print(f"train.resume=force: continuing {out_dir} with changed settings: {listing}", file=sys.stderr)
        return
    err = RunDirError(
        f"the settings differ from the run's {out_dir / 'config.yaml'}: {listing}. Resume with the run's own "
        "settings (the command below), continue anyway with train.resume=force, or start a new run"
    )
    err.run_dir = out_dir  # the CLI adds the run's resume command (from its own Hydra record)
    raise err


def save_student(student, tokenizer, loss_fn: DistillLoss, out_dir: Path) -> None:
    """The student as a standard HF folder; projections beside it, not inside it."""
    folder = safe_dir(out_dir, "student")
    tmp, old = out_dir / f".student.tmp-{os.getpid()}", out_dir / f".student.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    state = {k: v.detach().cpu().contiguous() for k, v in loss_fn.state_dict().items()}
    try:  # written beside the saved best, then swapped in: a full disk keeps the previous best whole
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if state:
            save_file(state, str(tmp / "projections.safetensors.next"))
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        kept = "the previous best is kept" if folder.exists() else "none was saved before"
        raise FadkdError(
            f"{folder}: the best student could not be saved ({str(err).splitlines()[0] if str(err) else err!r}); "
            f"{kept}: free some space on that disk, then continue from the last checkpoint with train.resume=true"
        ) from None
    if state:
        os.replace(tmp / "projections.safetensors.next", out_dir / "projections.safetensors")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


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
        "params": {"student": count_parameters(student), "teacher": None if teacher is None else teacher.params},
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "train_seconds": elapsed,
        "samples_per_s": seen / max(elapsed, 1e-9),
        "loss_formula": str(loss_fn),
        "mapping": [[p.student, p.teacher, p.weight] for p in pairs],
    }
