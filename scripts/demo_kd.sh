#!/usr/bin/env bash
# `make demo`: distillation on CPU in about a minute (67 s on 2 busy cores), nothing downloaded, on the
# SST-2 sample shipped with fadkd (fadkd/assets/glue_sample: the first 400 training, 120 dev rows of SST-2).
#   1. teacher            the tiny 4-layer, 64-wide BERT fine-tuned on all 400 labelled rows (fadkd finetune)
#   2. student alone      the tiny 2-layer, 32-wide BERT trained on the first 100 labelled rows only
#   3. distilled student  the same student and the same 100 labelled rows, plus the other 300 rows with their
#                         labels hidden (task.unlabelled_rows=300), learning from the teacher with fadkd's
#                         full objective (α KD, β cos, γ MSE, δ attention, ce on the labelled rows)
# Both students take the same 250 steps of 16 rows (the student alone: many passes over its 100 rows).
# Then one table of dev accuracy: at the best evaluation (the student fadkd keeps, chosen on these 120 dev
# rows, so optimistic) and after the last step. Usage: scripts/demo_kd.sh [OUT_DIR] (default: $DEMO_OUT or
# outputs/demo); SEED=43 scripts/demo_kd.sh: the students' seed (default 42). Every setting is an override below.
set -euo pipefail
cd "$(dirname "$0")/.."
FADKD=${FADKD:-.venv/bin/fadkd}
PYTHON=${PYTHON:-.venv/bin/python}
out=${1:-${DEMO_OUT:-outputs/demo}}
SEED=${SEED:-42}
# Only a folder this demo wrote (or an empty / new one) is replaced: never a folder holding anything else.
if [ -e "$out" ]; then
  other=$(ls -A "$out" 2>/dev/null | grep -vxE 'teacher|student_alone|distilled|\.fadkd-demo' || true)
  if [ ! -d "$out" ]; then
    echo "error: $out is a file, not a folder; give a new or empty folder, e.g. scripts/demo_kd.sh outputs/demo" >&2
    exit 2
  fi
  if [ -n "$other" ]; then
    echo "error: $out is not a folder this demo wrote (it holds: $(echo $other | cut -c1-80)); give a new or" \
      "empty folder, e.g. scripts/demo_kd.sh outputs/demo" >&2
    exit 2
  fi
fi
rm -rf "$out"
mkdir -p "$out"
touch "$out/.fadkd-demo"
# One thread: models this small gain nothing from a second one, and on a busy machine two threads wait on
# each other (a 70-step run: 1.7 s on one thread, 26.6 s on two, measured with other jobs on the 2 cores).
# No checkpoints: the demo never resumes.
quick=(train.num_threads=1 train.checkpoint_every=100000 train.log_every=25)

$FADKD finetune model=tiny train.epochs=15 train.lr=3e-4 "${quick[@]}" hydra.run.dir="$out/teacher"
student=(task.max_train_samples=100 train.max_steps=250 train.seed="$SEED" train.save_student=false "${quick[@]}")
$FADKD train loss=student_alone "${student[@]}" hydra.run.dir="$out/student_alone"
$FADKD train teacher=hf teacher.path="$out/teacher/student" task.unlabelled_rows=300 "${student[@]}" \
  hydra.run.dir="$out/distilled"

"$PYTHON" - "$out" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = [("teacher", "teacher", "400 labelled"), ("student alone", "student_alone", "100 labelled"),
        ("distilled student", "distilled", "100 labelled + 300 teacher-labelled")]  # fmt: skip
print(f"\nSST-2 sample, dev accuracy on its 120 rows ({out})")
print(f"{'':<18} {'params':>8} {'best (step)':>13} {'last step':>10}  training rows")
for name, folder, data in rows:
    m = json.loads((out / folder / "metrics.json").read_text())
    best = f"{m['student']['accuracy']:.4f} ({m['best_step']})"
    print(f"{name:<18} {m['params']['student']:>8,} {best:>13} {m['student_final']['accuracy']:>10.4f}  {data}")
EOF
