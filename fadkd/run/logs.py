"""Where a run's numbers go while it trains (`train.logger`).

- jsonl (default): steps.jsonl and evals.jsonl, the run's record that `fadkd plot`,
  `fadkd report` and the tests read.
- tensorboard: the same record, plus TensorBoard event files under <out_dir>/tensorboard
  for watching the run live (`tensorboard --logdir outputs`).
- none: nothing at all (a sweep that only wants metrics.json); `fadkd plot` then has no
  curves to draw and says so.
"""

import json
from pathlib import Path

from fadkd.errors import FadkdError
from fadkd.losses.table import TERMS

LOGGERS = ("jsonl", "tensorboard", "none")
LOSS_TERMS = tuple(t.name for t in TERMS)


def tensorboard_tag(key: str) -> str:
    """Group the scalars the way one reads them: loss terms, per-pair terms, training state."""
    if key == "loss":
        return "loss/total"
    if key in LOSS_TERMS or key.startswith("balance_"):  # balance_<term>: loss.balance's factor
        return f"loss/{key}"
    if "/" in key:
        return f"pair/{key}"
    return f"train/{key}"


def keep_rows_until(path: Path, last_step: int) -> None:
    """Resuming: rows after the checkpoint will be recomputed, so drop them (and any torn last line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash being resumed from
        if row.get("step", 0) <= last_step:
            kept.append(line + "\n")
    path.write_text("".join(kept))


class RunLog:
    """A run's numbers: steps.jsonl + evals.jsonl (the run's record, read by plots, report and
    tests), plus TensorBoard events under <out_dir>/tensorboard when logger == "tensorboard";
    nothing when "none". resume_step: continuing a run, keep the rows up to that step."""

    def __init__(self, out_dir: Path, logger: str = "jsonl", resume_step: int | None = None) -> None:
        if logger not in LOGGERS:
            raise FadkdError(f"train.logger={logger!r} is unknown; choose jsonl, tensorboard or none")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.logger = logger
        self.steps_path = out_dir / "steps.jsonl"
        self.evals_path = out_dir / "evals.jsonl"
        self._steps = self._evals = self._writer = None
        if logger == "none":
            return
        mode = "w"
        if resume_step is not None:
            keep_rows_until(self.steps_path, resume_step)
            keep_rows_until(self.evals_path, resume_step)
            mode = "a"
        self._steps = open(self.steps_path, mode)
        self._evals = open(self.evals_path, mode)
        self._writer = _tensorboard_writer(out_dir, resume_step) if logger == "tensorboard" else None

    def log_step(self, step: int, values: dict[str, float]) -> None:
        """One training row: the total loss, every unweighted term, per-pair terms, lr, grad norm, speed."""
        if self._steps is not None:
            _write_row(self._steps, step, values)
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(tensorboard_tag(key), value, step)

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        """One dev evaluation; TensorBoard shows it as dev/<metric>."""
        if self._evals is not None:
            _write_row(self._evals, step, metrics)
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(f"dev/{key}", value, step)
            self._writer.flush()

    def close(self) -> None:
        for handle in (self._steps, self._evals, self._writer):
            if handle is not None:
                handle.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_row(file, step: int, values: dict[str, float]) -> None:
    """Flushed at once: a crashed or killed run still leaves every row it computed."""
    file.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
    file.flush()


def _tensorboard_writer(out_dir: Path, resume_step: int | None):
    """Imported here so jsonl runs need no tensorboard; purge_step hides events a resume recomputes."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise FadkdError(
            "train.logger=tensorboard needs the tensorboard package: pip install 'tensorboard>=2.14' "
            "(or use train.logger=jsonl)"
        ) from err
    purge = resume_step + 1 if resume_step is not None else None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge)
