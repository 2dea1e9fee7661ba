#!/usr/bin/env bash
# The paper's causal-LM table on natural text, measured: SmolLM2-135M-Instruct teacher (30 layers) and its
# 10-layer from_teacher student (student=smollm2-135m-third: layers 0 1 4 7 10 13 16 20 24 29) on glue_text,
# whole English sentences from the GLUE folder (scripts/lm_corpus.py: MRPC/RTE/STS-B/WNLI train, CoLA's
# acceptable sentences and half of QNLI dev's Wikipedia sentences for training; MRPC/RTE/STS-B dev and the
# other half of QNLI dev held out, deduplicated against training; built into $CORPUS if missing).
# Rows: teacher (evaluated), student_init (layers kept, not trained: train.max_steps=0), then the student
# trained with lm_only (LM loss alone), kd_only (token KL + LM loss), features_only (cos + MSE + attention +
# LM loss), full (all four + LM loss) and minitron (experiment=lm_minitron: KL + cosine on the embeddings
# and three late layers, no LM loss), the same steps and data; kd_only and full once per seed in $SEEDS.
# Rows with teacher terms read it from the top-k teacher cache (fadkd/teacher/lm_cache.py, docs/causal-lm.md):
# the teacher runs once per cache key (kd_only's seeds share one; features_only and full share one with
# the mapped layers' states and maps; minitron has its own), not at every step.
#
# Writes bench/results/lm_glue_text.md (table: mean ± sd over seeds, per-seed rows, commands, CPU time,
# commit, machine) and appends one line per row and seed to bench/results/lm.jsonl; the runs stay in $OUT.
# `make lm-table` runs it. Needs `make models` and the GLUE folder (../shared/data/glue, or DATA=...).
#
# Knobs (environment variables):
#   STEPS=1000        optimizer steps per trained row; tokens per row = STEPS x BATCH x BLOCK (1,024,000)
#   BATCH=8 BLOCK=128 blocks per step, tokens per block
#   SEEDS="42 43"     the seeds of kd_only and full (the other rows: the first of them)
#   ROWS="student_init lm_only kd_only features_only full minitron"   a subset (student_init first: it
#                     also evaluates the teacher)
#   CACHE=1 TOPK=256 CACHE_DTYPE=float16   the teacher cache (CACHE=0: the live teacher at every step)
#   TAU=1.0           loss.temperature of every row. The cache keeps the top TOPK tokens at τ and the rest as one
#                     bucket (docs/causal-lm.md); SmolLM2's softened distribution is flat: on 384 glue_text training
#                     tokens the tokens outside the top 64 hold 78% of the mass at τ = 2 (52% outside the top
#                     1,024) but 17% at τ = 1 (9% outside the top 256, 4% outside the top 1,024). At τ = 1 (the
#                     plain logits) and k = 256 the tokens the sparse term cannot teach one by one hold 9% of
#                     the mass; the top 256 take 0.65 GB of disk on this corpus.
#   EVAL_TEXTS=2000   held-out texts (perplexity over all of them; the file is shuffled, so a sample of
#                     every source; 6,229 = all)
#   EVAL_SAMPLES=200  of those, how many prompt a greedy continuation (MAX_NEW=32 tokens)
#   CORPUS=bench/runs/corpus/glue_text   train.txt, heldout.txt, manifest.json (scripts/lm_corpus.py)
#   OUT=bench/runs/lm_glue_text-<time>   where the runs go;   EXTRA="..."  more overrides for every row
#   TEACHER=smollm2-135m STUDENT=smollm2-135m-third   presets (a dry run: TEACHER=tiny-llama
#                     STUDENT=tiny-llama-half PAIRS='[[1,2],[2,4]]' MINITRON_PAIRS='[[0,0],[2,4]]' STEPS=2
#                     MD=/tmp/t.md JSONL=/tmp/t.jsonl)
#   MD=bench/results/lm_glue_text.md JSONL=bench/results/lm.jsonl   where the table and the rows go
#   GAMMA=1e-4 DELTA=100   the MSE and attention weights of features_only and full; the other weights are 1.
#                     SmolLM2's residual stream carries a dimension of magnitude ~2.6e4 from layer 13 on, so
#                     at the start the unit-weight MSE summed over the pairs is ~3.4e4 while kd ~7 (τ = 2),
#                     ce ~10, cos ~2.5 and attention ~0.025 (measured on lm_sst2): these bring every term to the
#                     same order at the start.
# Feature rows map each student layer to the teacher layer it was copied from (1-based); minitron maps the
# embeddings and the last three (conf/experiment/lm_minitron.yaml):
PAIRS=${PAIRS:-'[[1,1],[2,2],[3,5],[4,8],[5,11],[6,14],[7,17],[8,21],[9,25],[10,30]]'}
MINITRON_PAIRS=${MINITRON_PAIRS:-'[[0,0],[8,21],[9,25],[10,30]]'}
set -euo pipefail
set -f  # no pathname expansion: the overrides hold brackets
cd "$(dirname "$0")/.."
FADKD=${FADKD:-.venv/bin/fadkd}
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-1000}
BATCH=${BATCH:-8}
BLOCK=${BLOCK:-128}
SEEDS=${SEEDS:-42 43}
EVAL_TEXTS=${EVAL_TEXTS:-2000}
EVAL_SAMPLES=${EVAL_SAMPLES:-200}
MAX_NEW=${MAX_NEW:-32}
DATA=${DATA:-../shared/data/glue}
CORPUS=${CORPUS:-bench/runs/corpus/glue_text}
ROWS=${ROWS:-student_init lm_only kd_only features_only full minitron}
OUT=${OUT:-bench/runs/lm_glue_text-$(date +%Y%m%d-%H%M%S)}
EXTRA=${EXTRA:-}
GAMMA=${GAMMA:-1e-4}
DELTA=${DELTA:-100}
CACHE=${CACHE:-1}
TOPK=${TOPK:-256}
TAU=${TAU:-1.0}
CACHE_DTYPE=${CACHE_DTYPE:-float16}
TEACHER=${TEACHER:-smollm2-135m}
STUDENT=${STUDENT:-smollm2-135m-third}
MD=${MD:-bench/results/lm_glue_text.md}
JSONL=${JSONL:-bench/results/lm.jsonl}

[ -f "$CORPUS/manifest.json" ] || "$PYTHON" scripts/lm_corpus.py --glue "$DATA" --out "$CORPUS"
cache=()
[ "$CACHE" = 1 ] && cache=(cache.enabled=true "cache.top_k=$TOPK" "cache.dtype=$CACHE_DTYPE")
common=(
  task=lm_text "task.train_file=$CORPUS/train.txt" "task.eval_file=$CORPUS/heldout.txt"
  "teacher=$TEACHER" "student=$STUDENT" train=lm
  "train.batch_size=$BATCH" "task.block_size=$BLOCK" "task.max_eval_samples=$EVAL_TEXTS"
  "task.eval_samples=$EVAL_SAMPLES" "task.max_new_tokens=$MAX_NEW" "loss.temperature=$TAU" "${cache[@]}"
)
features="mapping=explicit mapping.pairs=$PAIRS loss.gamma=$GAMMA loss.delta=$DELTA"
row_args() {
  case "$1" in
    student_init) echo "experiment=ablation_student_alone train.max_steps=0" ;;
    lm_only) echo "experiment=ablation_student_alone train.max_steps=$STEPS" ;;
    kd_only) echo "experiment=ablation_kd_only train.max_steps=$STEPS" ;;
    features_only) echo "experiment=ablation_features_only train.max_steps=$STEPS $features" ;;
    full) echo "experiment=ablation_full train.max_steps=$STEPS $features" ;;
    minitron) echo "experiment=lm_minitron train.max_steps=$STEPS mapping.pairs=$MINITRON_PAIRS" ;;
    *) echo "unknown row '$1' (rows: student_init lm_only kd_only features_only full minitron)" >&2; exit 2 ;;
  esac
}
first_seed=${SEEDS%% *}
runs=()  # row:seed, each in $OUT/<row>-s<seed>
for row in $ROWS; do
  case "$row" in kd_only | full) seeds=$SEEDS ;; *) seeds=$first_seed ;; esac
  for seed in $seeds; do runs+=("$row:$seed"); done
done

mkdir -p "$OUT"
for run in "${runs[@]}"; do
  row=${run%%:*} seed=${run##*:}
  dir="$OUT/$row-s$seed"
  started=$(date +%s)
  # shellcheck disable=SC2046,SC2086
  "$FADKD" train "${common[@]}" $(row_args "$row") "train.seed=$seed" $EXTRA "hydra.run.dir=$dir"
  echo $(($(date +%s) - started)) > "$dir/wall_seconds"  # the whole run: loading, teacher eval, cache, training
done
# shellcheck disable=SC2046
"$FADKD" table $(for run in "${runs[@]}"; do echo "$OUT/${run%%:*}-s${run##*:}"; done) --layout paper --out "$OUT"
"$PYTHON" scripts/lm_table_report.py "$OUT" --runs "${runs[*]}" --task lm_text --corpus "$CORPUS/manifest.json" \
  --md "$MD" --jsonl "$JSONL" \
  --script "STEPS=$STEPS BATCH=$BATCH BLOCK=$BLOCK SEEDS='$SEEDS' TAU=$TAU CACHE=$CACHE TOPK=$TOPK EVAL_TEXTS=$EVAL_TEXTS EVAL_SAMPLES=$EVAL_SAMPLES GAMMA=$GAMMA DELTA=$DELTA scripts/lm_table.sh"
