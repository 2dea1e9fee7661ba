"""Behaviour check for refactors: three seeded tiny runs, their steps.jsonl and metrics.json without timings.

    python scripts/same_behaviour.py --write before.json     # on the old commit
    python scripts/same_behaviour.py --against before.json   # on the new one: exit 1 on any difference

Runs (tiny models built from config, the shipped SST-2 sample, no downloads): a GLUE run with every loss
term, a causal-LM run, and a GLUE run through the teacher cache (run twice: written, then read).
Values are compared exactly; timings (samples/s, train seconds) and paths are left out.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

COMMON = ["train.max_steps=12", "train.log_every=1", "train.eval_every=6", "train.num_threads=1", "train.seed=7"]
RUNS = {
    "glue_full": ["loss.delta=0.5", "mapping.include_embeddings=true"],
    "lm": ["task=lm_sst2", "teacher=tiny-llama", "student=tiny-llama-half", "task.max_train_samples=64"],
    "glue_cached_write": ["cache.enabled=true", "loss.gamma=0.5"],
    "glue_cached_read": ["cache.enabled=true", "loss.gamma=0.5"],
}
TIMING = {"samples_per_s", "train_seconds", "train_time_s", "seconds", "elapsed", "time"}


def strip(value):
    """Drop timing fields and anything path-like, recursively."""
    if isinstance(value, dict):
        return {
            k: strip(v)
            for k, v in value.items()
            if k not in TIMING and "time" not in k and "dir" not in k and not k.endswith("_per_s")
        }
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def run_all(fadkd: str) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for name, overrides in RUNS.items():
            run_dir = Path(tmp) / name
            cmd = [fadkd, "train", *COMMON, *overrides, f"cache.dir={cache}", f"hydra.run.dir={run_dir}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
            metrics = json.loads((run_dir / "metrics.json").read_text())
            out[name] = {"steps": strip(steps), "metrics": strip(metrics)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path)
    parser.add_argument("--against", type=Path)
    parser.add_argument("--fadkd", default=str(Path(sys.executable).parent / "fadkd"))
    args = parser.parse_args()
    now = run_all(args.fadkd)
    if args.write:
        args.write.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        counts = ", ".join(f"{k} ({len(v['steps'])} steps)" for k, v in now.items())
        print(f"wrote {args.write}: {counts}")
    if args.against:
        before = json.loads(args.against.read_text())
        differ = []
        for name in RUNS:
            for part in ("steps", "metrics"):
                if before[name][part] != now[name][part]:
                    differ.append(f"{name}/{part}")
        if differ:
            sys.exit("different: " + ", ".join(differ))
        print(f"same steps.jsonl and metrics.json as {args.against} for: {', '.join(RUNS)}")


if __name__ == "__main__":
    main()
