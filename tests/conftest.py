"""Shared test helpers: paths, and running the CLI as a user would (a subprocess)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One torch thread in the test process and in every CLI run it starts (they inherit the environment): models
# this small gain nothing from a second thread, and on a busy machine two threads wait on each other
# (tests/test_cli.py on 2 shared cores: 111 s with two threads, 85 s with one). A value set outside is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "glue"
SHARED_GLUE = Path(os.environ.get("FADKD_GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))

# A few steps on a handful of rows: enough to exercise every file the CLI writes.
FAST = [
    "task.max_train_samples=24",
    "task.max_eval_samples=12",
    "train.max_steps=4",
    "train.batch_size=8",
    "train.log_every=1",
]


def run_cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "fadkd", *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fadkd {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
