"""Out of memory at the boundary: one line saying how much did not fit and what to lower, no allocator traceback."""

import subprocess
import sys

import pytest
from conftest import ROOT

from fadkd.config.schema import Config
from fadkd.preflight import out_of_memory

ALLOCATOR = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)"
)


def test_allocator_failure_names_the_size_and_what_to_lower(tmp_path):
    (tmp_path / "checkpoints" / "step-00000004").mkdir(parents=True)
    err = out_of_memory(RuntimeError(ALLOCATOR), Config(), tmp_path)
    text = str(err)
    assert text.startswith("out of memory: an allocation of 1.00 GiB did not fit; lower train.batch_size (now 16)")
    assert "student.hidden_size=32" in text and f"the checkpoints in {tmp_path / 'checkpoints'} are intact" in text
    assert "out of memory" in str(out_of_memory(MemoryError(), Config(), tmp_path))


def test_other_runtime_errors_are_left_alone(tmp_path):
    assert out_of_memory(RuntimeError("shape '[45, 128]' is invalid for input of size 0"), Config(), tmp_path) is None


LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # 6 GiB of address space: torch loads, the student not
from fadkd.cli import main
main(["train", *sys.argv[1:]])
"""


@pytest.mark.slow
def test_student_too_large_for_the_memory_limit(tmp_path):
    big = ["student.hidden_size=16384", "student.intermediate_size=65536"]
    args = ["task.max_train_samples=16", "task.max_eval_samples=8", "train.max_steps=1", "train.num_threads=1", *big]
    args.append(f"hydra.run.dir={tmp_path / 'run'}")
    proc = subprocess.run([sys.executable, "-c", LIMITED, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in err, err[-2000:]
    assert "out of memory: an allocation of" in err and "student.hidden_size=16384" in err
