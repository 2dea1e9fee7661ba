"""End-to-end time of a 4-run loss-weight sweep, with and without a shared teacher cache.

    make bench-multirun   # = .venv/bin/python bench/multirun_cache.py

Both sweeps are the same Hydra multirun (basic launcher, one process): mpnet-base -> minilm-l6 on
2,000 MRPC training rows (../shared/data/glue), 2 epochs each, loss.beta=0,1 x loss.delta=0,1.
With the cache, the first run writes the teacher's outputs and the three others read them.
"""

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("FADKD_GLUE_DIR") or ROOT.parent / "shared" / "data" / "glue")
RESULTS = ROOT / "bench" / "results"
WORK = Path(os.environ.get("FADKD_BENCH_WORK", "/tmp/fadkd-multirun"))
SWEEP = [
    "teacher=mpnet-base", "student=minilm-l6", "train=pretrained", "task=mrpc", f"task.data_dir={GLUE}",
    "task.max_train_samples=2000", "train.epochs=2", "train.batch_size=32", "train.group_by_length=true",
    "train.num_threads=2", "loss.beta=0,1", "loss.delta=0,1",
]  # fmt: skip


def machine_busy_s() -> float:
    """CPU seconds all processes spent busy so far (from /proc/stat)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sweep(cached: bool) -> tuple[float, float]:
    """(wall seconds, % of the machine's CPU other processes took meanwhile)."""
    name = "cached" if cached else "live"
    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    extra = [f"cache.enabled={str(cached).lower()}", f"cache.dir={WORK / 'cache'}", f"hydra.sweep.dir={out}"]
    cmd = [str(ROOT / ".venv/bin/fadkd"), "train", "-m", *SWEEP, *extra]
    busy0, own0, start = machine_busy_s(), children_s(), time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    other = max(0.0, (machine_busy_s() - busy0) - (children_s() - own0))
    return wall, 100 * other / (wall * (os.cpu_count() or 1))


def main() -> None:
    shutil.rmtree(WORK / "cache", ignore_errors=True)
    (live, live_other), (cached, cached_other) = sweep(cached=False), sweep(cached=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    record = {
        "bench": "multirun_cache",
        "runs": 4,
        "live_s": round(live, 1),
        "cached_s": round(cached, 1),
        "speedup": round(live / cached, 3),
        "other_cpu_pct": {"live": round(live_other, 1), "cached": round(cached_other, 1)},
        "command": "python bench/multirun_cache.py",
        "sweep": "fadkd train -m " + " ".join(SWEEP),
        "commit": commit.stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "multirun_cache.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))
    for name in ("live", "cached"):
        subprocess.run([str(ROOT / ".venv/bin/fadkd"), "table", str(WORK / name), "--out", str(WORK / name)], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
