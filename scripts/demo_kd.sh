#!/usr/bin/env bash
# The one-minute distillation story on CPU, on the SST-2 sample shipped with fadkd:
# fine-tune the tiny teacher, then train the tiny student alone and with the full objective,
# and print one table. Usage: scripts/demo_kd.sh [OUT_DIR] (default outputs/demo-kd)
set -euo pipefail
FADKD=${FADKD:-.venv/bin/fadkd}
out=${1:-outputs/demo-kd}
rm -rf "$out"
$FADKD finetune model=tiny hydra.run.dir="$out/teacher"
$FADKD train loss=student_alone hydra.run.dir="$out/student_alone"
$FADKD train loss=logits_only teacher=hf teacher.path="$out/teacher/student" hydra.run.dir="$out/kd_logits"
$FADKD train loss=full teacher=hf teacher.path="$out/teacher/student" hydra.run.dir="$out/kd_full"
$FADKD table "$out"
