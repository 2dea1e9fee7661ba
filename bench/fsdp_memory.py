"""Per-rank memory of train.strategy=ddp and fsdp: SmolLM2-135M -> its 10-layer student, CPU, a few steps.

    python bench/fsdp_memory.py            # 1 and 2 ranks x ddp and fsdp -> bench/results/fsdp_memory.md
    FADKD_MEMORY_STEPS=3 python bench/fsdp_memory.py

Each run is `torchrun --nproc_per_node=N -m fadkd train ...` in effect: this script relaunches itself
under torchrun, and every rank, once training is over (before the process group is left), writes one
JSON line: the bytes this rank holds of the student's (and projections') parameters, of their
gradients (a gradient has its parameter's local shape and lives from backward to zero_grad), of
AdamW's state, of the teacher's parameters, the process's peak RSS (ru_maxrss: it includes loading
both models whole, before they are sharded) and its RSS after training.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STEPS = int(os.environ.get("FADKD_MEMORY_STEPS", "3"))
GLUE = os.environ.get("FADKD_GLUE_DIR") or str(ROOT.parent / "shared" / "data" / "glue")
ARGS = [
    "task=lm_sst2", f"task.data_dir={GLUE}", "teacher=smollm2-135m", "student=smollm2-135m-third", "train=lm",
    "experiment=lm_minitron", f"train.max_steps={STEPS}", "train.batch_size=2", "task.block_size=64",
    "task.max_train_samples=64", "task.max_eval_samples=8", "task.eval_samples=1", "task.max_new_tokens=2",
    "train.num_threads=1", "train.log_every=1", "train.save_student=false", "train.checkpoint_every=0",
]  # fmt: skip
RUNS = [(1, "ddp"), (2, "ddp"), (1, "fsdp"), (2, "fsdp")]


def _local_bytes(tensors) -> int:
    return sum((t.to_local() if hasattr(t, "to_local") else t).nbytes for t in tensors)


def measure(run) -> dict:
    """This rank's share of what training holds (call before the process group goes)."""
    trained = [p for _, p in run.parts.named_params]
    state = [v for s in run.parts.optimizer.state.values() for v in s.values() if hasattr(v, "nbytes")]
    teacher = getattr(run.teacher, "model", None)
    return {
        "strategy": run.cfg.train.strategy.value, "ranks": run.dist.world_size, "rank": run.dist.rank,
        "sharded": run.sharded, "steps": run.state.step,
        "student_param_bytes": _local_bytes(trained), "grad_bytes": _local_bytes(trained),
        "optimizer_bytes": _local_bytes(state),
        "teacher_param_bytes": _local_bytes(teacher.parameters()) if teacher is not None else 0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_training_mib": _rss(),
    }  # fmt: skip


def _rss() -> float:
    """The process's resident memory now (MiB): after sharding, unlike the peak, which includes the load."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(out: Path) -> None:
    """One rank: fadkd's CLI, with finish() wrapped to write this rank's line first."""
    from fadkd.cli import main
    from fadkd.run import train

    original = train.finish

    def finish(run):
        with open(out, "a") as f:
            f.write(json.dumps(measure(run)) + "\n")
        return original(run)

    train.finish = finish
    main(sys.argv[2:])


def launch(ranks: int, strategy: str, out: Path, run_dir: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", __file__,
           "--worker", "train", *ARGS, f"train.strategy={strategy}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FADKD_MEMORY_OUT": str(out), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def table(lines: list[dict]) -> str:
    mib = 1 << 20
    rows = [
        "| strategy | ranks | rank | student params MiB | grads MiB | AdamW state MiB | student total MiB | "
        "teacher params MiB | peak RSS MiB | RSS after training MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lines:
        total = r["student_param_bytes"] + r["grad_bytes"] + r["optimizer_bytes"]
        rows.append(
            f"| {r['strategy']} | {r['ranks']} | {r['rank']} | {r['student_param_bytes'] / mib:.1f} | "
            f"{r['grad_bytes'] / mib:.1f} | {r['optimizer_bytes'] / mib:.1f} | {total / mib:.1f} | "
            f"{r['teacher_param_bytes'] / mib:.1f} | {r['peak_rss_mib']:.0f} | {r['rss_after_training_mib']:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks, strategy in RUNS:
            out = Path(tmp) / f"{strategy}-{ranks}.jsonl"
            launch(ranks, strategy, out, Path(tmp) / f"run-{strategy}-{ranks}")
            lines += sorted((json.loads(x) for x in out.read_text().splitlines()), key=lambda r: r["rank"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = f"python bench/fsdp_memory.py  (FADKD_MEMORY_STEPS={STEPS}; each run: torchrun --nproc_per_node=N " \
        f"-m fadkd train {' '.join(ARGS)} train.strategy=S)"  # fmt: skip
    text = (
        f"# Per-rank memory: train.strategy=ddp vs fsdp\n\n{stamp}, commit {commit.stdout.strip()}, CPU (gloo), "
        f"{os.cpu_count()} cores.\n\n    {command}\n\n{table(lines)}\n\nOne JSON line per rank:\n\n"
        + "\n".join(f"    {json.dumps(r)}" for r in lines) + "\n"
    )  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fsdp_memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(Path(os.environ["FADKD_MEMORY_OUT"]))
    else:
        main()
