#!/usr/bin/env bash
# The GPU run (issue 26, part 7): on one CUDA GPU, under 9 minutes (BUDGET=540 s), no network:
#   1. speed: bench/speed.py --device cuda --dtype bf16 (FLOOR, fadkd full, fadkd cached, each new term, TextBrewer,
#      torchdistill on the protocol's step; bf16 = autocast, bench/common.py) -> bench/results/speed_gpu.md, .jsonl
#   2. lm: scripts/lm_table.sh (`make lm-table`: natural text, STEPS=1000 x BATCH=8 x BLOCK=128 = 1,024,000
#      training tokens per trained row, SEEDS="42 43" for kd_only and full) with train.device=cuda
#      train.precision=bf16 -> bench/results/lm_glue_text_gpu.md, lm_gpu.jsonl
#   3. a summary; every file written is also copied to $OUT when that is set (the device tool's folder).
# Each part has its own time limit (SPEED_TIMEOUT, then whatever is left of BUDGET for lm). An lm part cut
# short still writes its table, from the runs that finished, and says which did not. PARTS="speed lm" (or one).
#
#   bench/gpu/run.sh              the GPU run
#   bench/gpu/run.sh --dry-run    (or DRY_RUN=1) every part on CPU at a tiny scale, into bench/runs/gpu-dry-run/
#                                 (tests/test_gpu_run.py runs it with RESULTS=<tmp>)
#
# What the GPU machine needs (it has Python 3.12, torch and transformers, and nothing can be fetched there):
# the folder CARRY=bench/gpu/carry, ignored by git, which the lead prepares here (PyPI reachable) with
#     make models && .venv/bin/python bench/gpu/assets.py carry        # ~15 MB: wheels, configs, data
# and names in the device tool's carry: run(command="bench/gpu/run.sh", carry=["bench/gpu/carry"]).
# It holds the wheels of what fadkd and the peers import beyond the image (installed into /tmp/fadkd-site),
# mpnet-base and minilm-l6 as config + tokenizer (the speed part builds them with random weights: their
# weights, 505 MB, cannot travel; step time does not depend on them), SST-2's train.tsv and the LM corpus.
# SmolLM2-135M's weights (269 MB even in bf16) cannot travel either: part 2 runs only where
# FADKD_ASSETS/smollm2-135m holds them, and is skipped with a message otherwise.
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (--dry-run, --help)" >&2; exit 2 ;;
  esac
done
DEVICE_OUT=${OUT:-}  # the device tool's folder; lm_table.sh's own OUT is set below
if [ "$DRY_RUN" = 1 ]; then  # the dry run's limits: a shared 2-core CPU, a process start per method
  BUDGET=${BUDGET:-1800} SPEED_TIMEOUT=${SPEED_TIMEOUT:-900}
else
  BUDGET=${BUDGET:-540} SPEED_TIMEOUT=${SPEED_TIMEOUT:-200}
fi
CARRY=${CARRY:-bench/gpu/carry}
PARTS=${PARTS:-speed lm}  # a rerun of one part: PARTS=lm
started=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - started))); }

if [ "$DRY_RUN" = 1 ]; then
  WORK=${WORK:-bench/runs/gpu-dry-run}
  RESULTS=${RESULTS:-$WORK/results}
else
  WORK=${WORK:-bench/runs/gpu-$(date +%Y%m%d-%H%M%S)}
  RESULTS=${RESULTS:-bench/results}
fi
mkdir -p "$WORK" "$RESULTS"
LOG=$WORK/run.log
exec > >(tee -a "$LOG") 2>&1

# --- the Python environment: .venv here; on the GPU machine the image's python3 + the carried wheels
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if ls "$CARRY"/wheels/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import hydra, jiwer, rouge_score" 2>/dev/null; then
  echo "[env] installing $(ls "$CARRY"/wheels/*.whl | wc -l) carried wheels into /tmp/fadkd-site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fadkd-site \
    "$CARRY"/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/fadkd-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # fadkd from this tree, installed or not
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
FADKD=${FADKD:-.venv/bin/fadkd}
if [ ! -x "$FADKD" ]; then
  FADKD=$WORK/fadkd
  printf '#!/bin/sh\nexec "%s" -m fadkd "$@"\n' "$(command -v "$PYTHON")" > "$FADKD" && chmod +x "$FADKD"
fi
[ -x .venv-textbrewer/bin/python ] && [ -x .venv-torchdistill/bin/python ] || export FADKD_PEER_PYTHON=${FADKD_PEER_PYTHON:-$(command -v "$PYTHON")}
"$PYTHON" - "$DRY_RUN" <<'EOF' || exit 1
import sys, torch
if sys.argv[1] != "1" and not torch.cuda.is_available():
    sys.exit("run.sh: torch sees no CUDA GPU here (bench/gpu/run.sh --dry-run runs it on CPU)")
import transformers
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print("[env] python", sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda,
      "transformers", transformers.__version__, "GPU:", gpu)
EOF

# --- what each mode runs on
ASSETS=${FADKD_ASSETS:-$HOME/.cache/fadkd-assets}
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  SPEED_ASSETS=$WORK/assets
  "$PYTHON" bench/gpu/assets.py tiny "$SPEED_ASSETS" || exit 1
  export FADKD_GLUE_DIR=fadkd/assets/glue_sample FADKD_BENCH_STEPS=3 FADKD_BENCH_THREADS=1
  SPEED_ARGS=(--rounds 1 --noisy 100)  # a shared CPU: keep the round, whatever else ran
  LM_ROWS=${ROWS:-student_init kd_only full} LM_CORPUS=$WORK/corpus
  LM_ENV=(TEACHER=tiny-llama STUDENT=tiny-llama-half "PAIRS=[[1,2],[2,4]]" "MINITRON_PAIRS=[[0,0],[2,4]]"
    STEPS=2 BATCH=2 BLOCK=16 EVAL_TEXTS=8 EVAL_SAMPLES=4 MAX_NEW=4 TOPK=8 DATA=tests/fixtures/glue
    "EXTRA=train.device=cpu train.precision=bf16 train.num_threads=1")
else
  DEVICE=cuda
  SPEED_ASSETS=$ASSETS
  [ -f "$ASSETS/mpnet-base/config.json" ] && [ -f "$ASSETS/minilm-l6/config.json" ] || SPEED_ASSETS=$CARRY/assets
  [ -d ../shared/data/glue/SST-2 ] || export FADKD_GLUE_DIR=$CARRY/glue
  SPEED_ARGS=(--rounds 3)
  LM_ROWS=${ROWS:-student_init lm_only kd_only features_only full minitron} LM_CORPUS=$CARRY/corpus/glue_text
  [ -f "$LM_CORPUS/manifest.json" ] || LM_CORPUS=bench/runs/corpus/glue_text  # else built from ../shared/data/glue
  LM_ENV=("EXTRA=train.device=cuda train.precision=bf16")  # lm_table.sh's defaults: STEPS=1000 BATCH=8 BLOCK=128
fi

status=()  # one "part: what happened" per part, for the summary
written=()
run_part() {  # run_part NAME SECONDS COMMAND...: its own time limit; records what happened
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo; echo "=== $name (limit ${limit}s, $(left)s of the budget left)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  local took=$(($(date +%s) - t0))
  case $rc in
    0) status+=("$name: done in ${took}s") ;;
    124 | 137) status+=("$name: TIMED OUT after ${took}s (limit ${limit}s)") ;;
    *) status+=("$name: FAILED (exit $rc) after ${took}s") ;;
  esac
  return $rc
}

# --- 1. speed
missing=$(for m in mpnet-base minilm-l6; do [ -f "$SPEED_ASSETS/$m/config.json" ] || echo -n "$m "; done)
if [[ " $PARTS " != *" speed "* ]]; then
  status+=("speed: not asked for (PARTS=$PARTS)")
elif [ -n "$missing" ]; then
  status+=("speed: SKIPPED: no $missing in $SPEED_ASSETS (make models; bench/gpu/assets.py carry)")
else
  any_weights=$(ls "$SPEED_ASSETS"/minilm-l6/*.safetensors 2>/dev/null | head -1)
  [ -n "$any_weights" ] || export FADKD_BENCH_RANDOM_WEIGHTS=1
  run_part speed "$SPEED_TIMEOUT" env "FADKD_ASSETS=$SPEED_ASSETS" "FADKD_BENCH_CACHE=$WORK/bench-cache" \
    "$PYTHON" bench/speed.py --device "$DEVICE" --dtype bf16 --name speed_gpu --results "$RESULTS" "${SPEED_ARGS[@]}" &&
    written+=("$RESULTS/speed_gpu.md" "$RESULTS/speed_gpu.jsonl")
fi

# --- 2. the causal-LM table
LM_OUT=$WORK/lm
LM_SEEDS=${SEEDS:-42 43}
lm_env=("${LM_ENV[@]}" "ROWS=$LM_ROWS" "SEEDS=$LM_SEEDS" "CORPUS=$LM_CORPUS" "OUT=$LM_OUT" "FADKD=$FADKD" "PYTHON=$PYTHON" "MD=$RESULTS/lm_glue_text_gpu.md"
  "JSONL=$RESULTS/lm_gpu.jsonl" "FADKD_ASSETS=$ASSETS")
if [[ " $PARTS " != *" lm "* ]]; then
  status+=("lm: not asked for (PARTS=$PARTS)")
elif [ "$DRY_RUN" != 1 ] && [ ! -f "$ASSETS/smollm2-135m/model.safetensors" ]; then
  status+=("lm: SKIPPED: no SmolLM2-135M weights in $ASSETS/smollm2-135m (too large to carry; see the top of run.sh)")
elif [ $(($(left) - 30)) -lt 60 ]; then
  status+=("lm: SKIPPED: $(left)s of the ${BUDGET}s budget left")
else
  lm_limit=$(($(left) - 30))
  if run_part lm "$lm_limit" env "${lm_env[@]}" scripts/lm_table.sh; then
    written+=("$RESULTS/lm_glue_text_gpu.md" "$RESULTS/lm_gpu.jsonl")
  elif [ -n "$(ls "$LM_OUT"/*/metrics.json 2>/dev/null)" ]; then
    # cut short: the table of the runs that finished (lm_table.sh's row order), saying which did not
    done_runs=() missing_runs=()
    for row in $LM_ROWS; do
      case "$row" in kd_only | full) row_seeds=$LM_SEEDS ;; *) row_seeds=${LM_SEEDS%% *} ;; esac
      for seed in $row_seeds; do
        if [ -f "$LM_OUT/$row-s$seed/metrics.json" ]; then done_runs+=("$row:$seed"); else missing_runs+=("$row:$seed"); fi
      done
    done
    "$PYTHON" scripts/lm_table_report.py "$LM_OUT" --runs "${done_runs[*]}" --task lm_text \
      --corpus "$LM_CORPUS/manifest.json" --md "$RESULTS/lm_glue_text_gpu.md" \
      --jsonl "$RESULTS/lm_gpu.jsonl" --script "bench/gpu/run.sh (lm part cut short; not finished: ${missing_runs[*]})" &&
      written+=("$RESULTS/lm_glue_text_gpu.md" "$RESULTS/lm_gpu.jsonl") &&
      status+=("lm: partial table of ${#done_runs[@]} runs; not finished: ${missing_runs[*]}")
  fi
fi

# --- 3. summary
echo; echo "=== summary ($(($(date +%s) - started))s of ${BUDGET}s; $([ "$DRY_RUN" = 1 ] && echo 'DRY RUN on CPU' || echo "$DEVICE"))"
for line in "${status[@]}"; do echo "  $line"; done
for file in "${written[@]}"; do
  [ -f "$file" ] || continue
  echo "--- $file"
  case "$file" in *.md) grep -E '^(- (device|dtype|weights|machine|commit)|\| )' "$file" | head -20 ;; *) echo "  $(wc -l < "$file") lines" ;; esac
done
if [ -n "$DEVICE_OUT" ]; then
  mkdir -p "$DEVICE_OUT" && cp "${written[@]}" "$LOG" "$DEVICE_OUT"/ 2>/dev/null
  echo "copied ${#written[@]} result files and run.log to $DEVICE_OUT"
fi
failed=0
for line in "${status[@]}"; do case "$line" in *FAILED* | *"TIMED OUT"*) failed=1 ;; esac; done
exit $failed
