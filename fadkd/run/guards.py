"""What stops a run cleanly: non-finite values and SIGINT / SIGTERM.

Both are checked between steps so the loop can write a checkpoint of the last good state
before it stops; nothing here touches the weights.
"""

import math
import os
import signal
import time

from torch import Tensor

from fadkd.errors import FadkdError
from fadkd.losses.table import TERMS

TERM_NAMES = {t.name: t.name if t.layers else t.title for t in TERMS}  # layer terms: "mse at layer pair ..."


class NonFiniteError(FadkdError):
    """A loss term or gradient became NaN or infinite."""


def nonfinite_term(terms: dict[str, Tensor]) -> str | None:
    """Name the first non-finite term, at its layer pair when the per-pair value is known."""
    bad = [k for k, v in terms.items() if not math.isfinite(float(v))]
    if not bad:
        return None
    per_pair = [k for k in bad if "/" in k]
    key = per_pair[0] if per_pair else bad[0]
    name, _, pair = key.partition("/")
    if pair:  # "s1_t2" -> "student layer 1 <- teacher layer 2"
        student, teacher = pair[1:].split("_t")
        where = f" at layer pair student {student} <- teacher {teacher}"
    else:
        where = ""
    return f"{TERM_NAMES.get(name, name)}{where}"


def nonfinite_gradient(named_parameters) -> str | None:
    """Name the first parameter whose gradient is NaN or infinite."""
    for name, param in named_parameters:
        if param.grad is not None and not bool(param.grad.isfinite().all()):
            return name
    return None


class Interrupts:
    """Turn SIGINT / SIGTERM into a flag the loop reads after each step.

    The first signal asks the loop to finish its step, checkpoint and exit (130 / 143). A second
    SIGINT within GRACE seconds (a double press) is ignored; a later one stops at once, without a
    checkpoint, as a KeyboardInterrupt that the CLI reports in one line.
    """

    EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
    GRACE = 3.0

    def __init__(self) -> None:
        self.received: int | None = None
        self._at = 0.0
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            if time.monotonic() - self._at < self.GRACE:
                print("already stopping: the checkpoint follows this step (Ctrl-C again later stops without one)")
                return
            raise KeyboardInterrupt
        self.received, self._at = signum, time.monotonic()
        print(f"\n{signal.Signals(signum).name} received: finishing this step, then writing a checkpoint")

    def __enter__(self) -> "Interrupts":
        for sig in self.EXIT_CODES:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some launchers): signals stay as they were
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        return self.EXIT_CODES.get(self.received, 1)


# Test hooks: SIGKILL this process right after the given step, to prove resume is exact; raise
# there, to prove one failing rank ends a multi-process run. FADKD_FAULT_RANK picks one rank.
_KILL_AT_STEP = int(os.environ.get("FADKD_FAULT_KILL_AT_STEP", "0"))
_RAISE_AT_STEP = int(os.environ.get("FADKD_FAULT_RAISE_AT_STEP", "0"))
_FAULT_RANK = os.environ.get("FADKD_FAULT_RANK")


def fault_injection(step: int, rank: int = 0) -> None:
    if _FAULT_RANK is not None and int(_FAULT_RANK) != rank:
        return
    if _KILL_AT_STEP and step == _KILL_AT_STEP:
        os.kill(os.getpid(), signal.SIGKILL)
    if _RAISE_AT_STEP and step == _RAISE_AT_STEP:
        raise RuntimeError(f"injected fault at step {step} on rank {rank} (FADKD_FAULT_RAISE_AT_STEP)")
