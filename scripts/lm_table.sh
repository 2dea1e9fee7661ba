#!/usr/bin/env bash
# The paper's causal-LM table, measured: SmolLM2-135M-Instruct teacher (30 layers) and its 10-layer
# from_teacher student (layers 0, 3, ..., 27) on lm_sst2 (GLUE SST-2 sentences; dev held out).
# Rows: teacher (evaluated), student_init (layers kept, not trained: train.max_steps=0), then the
# student trained with lm_only (LM loss alone), kd_only (token KL + LM loss), features_only
# (cos + MSE + attention + LM loss) and full (all four + LM loss), the same steps, data and seed.
#
# Writes bench/results/lm_sst2.md (table, command, commit, machine) and appends one row per line to
# bench/results/lm.jsonl; the runs stay in $OUT. `make lm-table` runs it. Needs `make models` and the
# GLUE SST-2 files (../shared/data/glue, or DATA=<GLUE folder>).
#
# Knobs (environment variables):
#   STEPS=150         optimizer steps per trained row (batch BATCH x BLOCK tokens): the budget knob
#   BATCH=8 BLOCK=128 blocks per step, tokens per block
#   EVAL_TEXTS=872    held-out dev sentences (perplexity over all of them; 872 = the whole dev split)
#   EVAL_SAMPLES=200  of those, how many prompt a greedy continuation (MAX_NEW=32 tokens)
#   ROWS="student_init lm_only kd_only features_only full"   a subset to run (student_init first: it
#                     also evaluates the teacher)
#   OUT=bench/runs/lm_sst2-<time>   where the runs go;   EXTRA="..."  more overrides for every row
set -euo pipefail
cd "$(dirname "$0")/.."
FADKD=${FADKD:-.venv/bin/fadkd}
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-150}
BATCH=${BATCH:-8}
BLOCK=${BLOCK:-128}
EVAL_TEXTS=${EVAL_TEXTS:-872}
EVAL_SAMPLES=${EVAL_SAMPLES:-200}
MAX_NEW=${MAX_NEW:-32}
DATA=${DATA:-../shared/data/glue}
ROWS=${ROWS:-student_init lm_only kd_only features_only full}
OUT=${OUT:-bench/runs/lm_sst2-$(date +%Y%m%d-%H%M%S)}
EXTRA=${EXTRA:-}

common=(
  task=lm_sst2 "task.data_dir=$DATA" teacher=smollm2-135m student=smollm2-135m-third train=lm
  "train.batch_size=$BATCH" "task.block_size=$BLOCK" "task.max_eval_samples=$EVAL_TEXTS"
  "task.eval_samples=$EVAL_SAMPLES" "task.max_new_tokens=$MAX_NEW"
)
row_args() {
  case "$1" in
    student_init) echo "experiment=ablation_student_alone train.max_steps=0" ;;
    lm_only) echo "experiment=ablation_student_alone train.max_steps=$STEPS" ;;
    kd_only) echo "experiment=ablation_kd_only train.max_steps=$STEPS" ;;
    features_only) echo "experiment=ablation_features_only train.max_steps=$STEPS" ;;
    full) echo "experiment=ablation_full train.max_steps=$STEPS" ;;
    *) echo "unknown row '$1' (rows: student_init lm_only kd_only features_only full)" >&2; exit 2 ;;
  esac
}

mkdir -p "$OUT" bench/results
for row in $ROWS; do
  # shellcheck disable=SC2046,SC2086
  "$FADKD" train "${common[@]}" $(row_args "$row") $EXTRA "hydra.run.dir=$OUT/$row"
done
# shellcheck disable=SC2086
"$FADKD" table $(for row in $ROWS; do echo "$OUT/$row"; done) --layout paper --out "$OUT"
"$PYTHON" scripts/lm_table_report.py "$OUT" --rows "$ROWS" --task lm_sst2 \
  --md bench/results/lm_sst2.md --jsonl bench/results/lm.jsonl \
  --script "STEPS=$STEPS BATCH=$BATCH BLOCK=$BLOCK EVAL_TEXTS=$EVAL_TEXTS EVAL_SAMPLES=$EVAL_SAMPLES scripts/lm_table.sh"
