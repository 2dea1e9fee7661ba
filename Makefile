# fadkd: `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-slow lint format clean models bench-peers lm-table bench bench-multirun gpu-run quality quality-shrink quality-fast quality-pruned quality-fast-summary

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: this version's CPU build is on disk; an unpinned torch pulls GBs of CUDA wheels
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv: torch==2.13.0 first, then fadkd with dev tools

DEMO_OUT ?= outputs/demo
demo: $(STAMP)  ## distillation in about a minute on CPU: tiny teacher, student alone, distilled student on the shipped SST-2 sample (outputs/demo)
	FADKD=$(BIN)/fadkd PYTHON=$(BIN)/python scripts/demo_kd.sh $(DEMO_OUT)

test: $(STAMP)  ## the fast test suite (about 4 minutes on 2 CPU cores; README says the measured time)
	$(BIN)/pytest -q

test-slow: $(STAMP)  ## the slow tests (real GLUE data, longer CLI runs); CI runs them too
	$(BIN)/pytest -q -m slow

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

models: $(STAMP)  ## fetch the real pretrained models (mpnet-base, minilm-l6, minilm-l3, smollm2-135m) into FADKD_ASSETS (default ~/.cache/fadkd-assets)
	$(BIN)/python scripts/fetch_models.py

# Benchmark-only peers, each in its own venv layered on .venv (a .pth file adds .venv's
# site-packages, so torch/transformers come from there); --no-deps so no torch wheel of their own.
PEER_PTH = $(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'

.venv-textbrewer/.installed: $(STAMP)
	$(BIN)/python -m venv .venv-textbrewer
	$(PEER_PTH) > $$(.venv-textbrewer/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fadkd-main-venv.pth
	.venv-textbrewer/bin/pip install -q --no-deps textbrewer==0.2.1.post1 tensorboardX protobuf
	touch $@

.venv-torchdistill/.installed: $(STAMP)
	$(BIN)/python -m venv .venv-torchdistill
	$(PEER_PTH) > $$(.venv-torchdistill/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fadkd-main-venv.pth
	.venv-torchdistill/bin/pip install -q --no-deps torchdistill==1.1.5 torchvision==0.28.0 pillow
	touch $@

bench-peers: .venv-textbrewer/.installed .venv-torchdistill/.installed  ## install TextBrewer and torchdistill in their own venvs (benchmark only)

lm-table: $(STAMP)  ## the causal-LM table (SmolLM2-135M -> its 10-layer student on natural GLUE sentences, scripts/lm_corpus.py; teacher through the top-k cache; STEPS=1000: 1.02M tokens per trained row) -> bench/results/lm_glue_text.md, lm.jsonl
	scripts/lm_table.sh

clean:  ## remove run outputs (not the venv)
	rm -rf outputs multirun .pytest_cache

bench: $(STAMP) bench-peers  ## speed benchmark vs FLOOR, TextBrewer, torchdistill (needs `make models`) -> bench/results/speed.md
	$(BIN)/python bench/speed.py --rounds 3

# No .venv prerequisite: the GPU machine has no network to build one; run.sh takes .venv when it is there,
# else python3 and the wheels in bench/gpu/carry (bench/gpu/assets.py carry prepares that folder).
gpu-run:  ## one CUDA GPU, < 9 min, offline: the speed benchmark in bf16 and the LM table -> bench/results/speed_gpu.md, lm_glue_text_gpu.md (DRY_RUN=1: on CPU, tiny)
	bench/gpu/run.sh

bench-multirun: $(STAMP)  ## a 4-run sweep on 2,000 MRPC rows with and without the teacher cache -> bench/results/multirun_cache.jsonl
	$(BIN)/python bench/multirun_cache.py

# The quality suite: TASKS, SEEDS, EPOCHS, FULL (the full row's experiment config), ROWS (extra
# rows as name=experiment), GLUE (the GLUE folder). Runs in outputs/quality/<task>/; reruns reuse them.
TASKS ?= mrpc rte
SEEDS ?= 42 43 44
EPOCHS ?= 3
FULL ?= ablation_full
ROWS ?=
GLUE ?= ../shared/data/glue
quality: $(STAMP)  ## GLUE ablation (teacher, student alone, KD only, features only, full) x SEEDS on TASKS (needs `make models`) -> bench/results/quality_<tasks>.md, quality.jsonl
	$(BIN)/python scripts/glue_suite.py --tasks $(TASKS) --seeds $(SEEDS) --epochs $(EPOCHS) --full $(FULL) \
		--data-dir $(GLUE) $(if $(strip $(ROWS)),--rows $(ROWS))

# The shrink suite: a student built from the fine-tuned teacher's layers; rows student alone, KD only,
# the recipe, and the last two on teacher-labelled data. SST-2 keeps 8,000 labelled rows and hides the
# labels of the next POOL (the unlabelled pool); MRPC and RTE get LM-written copies (conf/data/lm_copies.yaml).
SHRINK_TEACHER ?= mpnet-base
SHRINK_KEEP ?= [0,4,8,11]
POOL ?= 16000
quality-shrink: $(STAMP)  ## students built from the teacher's layers on SST-2 (8k labels + POOL unlabelled) x SEEDS (needs `make models`) -> bench/results/quality_shrink_sst2.md, quality.jsonl
	$(BIN)/python scripts/glue_suite.py --shrink --tasks sst2 --seeds $(SEEDS) --epochs $(EPOCHS) --data-dir $(GLUE) \
		--out outputs/shrink --teacher $(SHRINK_TEACHER) --teacher-lr 5e-5 --student from-teacher \
		--student-extra 'student.keep_layers=$(SHRINK_KEEP)' --student-label "$(SHRINK_TEACHER) layers $(SHRINK_KEEP)" \
		--extra task.max_train_samples=8000 --data-extra task.augment=0 task.unlabelled_rows=$(POOL) \
		--md bench/results/quality_shrink_sst2.md

# The fast pair on three tasks (issue 25): teacher all-MiniLM-L6-v2 fine-tuned per task, student its layers
# 0, 2, 5; every shrink row (with the fair controls kd_only_long, kd_only_data_long) and ROWS on seeds SEEDS
# (ONLY="row ...": train just those).
# Teacher-labelled data per task: SST-2 the next 8,000 training rows with labels hidden; MRPC the STS-B and
# RTE training pairs, CoLA 34,204 SST-2 training phrases (4x its rows), labels dropped (scripts/transfer_set.py,
# dev sentences left out); LM-written copies instead: FAST_DATA_cola=task.augment=4.
FAST_OUT ?= outputs/shrink
FAST_DATA_sst2 = task.augment=0 task.unlabelled_rows=8000
TRANSFER_mrpc ?= outputs/transfer/mrpc_pairs.tsv
TRANSFER_cola ?= outputs/transfer/cola_sentences.txt
FAST_DATA_mrpc = task.augment=0 task.unlabelled_file=$(TRANSFER_mrpc)
FAST_DATA_cola ?= task.augment=0 task.unlabelled_file=$(TRANSFER_cola)
FAST_EXTRA_sst2 = task.max_train_samples=8000
FAST_NAME_sst2 = the 8,000 labelled rows
FAST_NAME_mrpc = MRPC
FAST_NAME_cola = CoLA
TASK ?= cola
quality-fast: $(STAMP)  ## the fast pair (MiniLM-L6 -> its layers 0,2,5) on TASK=sst2|mrpc|cola x SEEDS, resumable -> bench/results/quality_shrink_TASK.md; then quality-fast-summary
	$(if $(TRANSFER_$(TASK)),$(BIN)/python scripts/transfer_set.py --task $(TASK) --glue $(GLUE) --out $(TRANSFER_$(TASK)))
	$(BIN)/python scripts/glue_suite.py --shrink --tasks $(TASK) --seeds $(SEEDS) --epochs $(EPOCHS) --data-dir $(GLUE) \
		--out $(FAST_OUT) --teacher minilm-l6 --teacher-lr 5e-5 --student from-teacher \
		--student-extra 'student.keep_layers=[0,2,5]' --student-label "all-MiniLM-L6-v2 fine-tuned on $(FAST_NAME_$(TASK)), its layers 0, 2, 5 (3 of 6)" \
		--extra train.num_threads=1 $(FAST_EXTRA_$(TASK)) --data-extra $(FAST_DATA_$(TASK)) --no-speed \
		$(if $(strip $(ROWS)),--rows $(ROWS)) $(if $(strip $(ONLY)),--only $(ONLY)) --md bench/results/quality_shrink_$(TASK).md

# Width-pruned students (issue 27): the same SST-2 setting (8,000 labels + 8,000 teacher-labelled rows), the student
# pruned from the fine-tuned teacher by activation importance (student=pruned) instead of keeping layers 0, 2, 5.
# PRUNE: the shape (default all 6 layers, FFN 1536 -> 384: 17.4M, the depth-only student's size; the smaller one:
# PRUNE='student.prune.heads=6 student.prune.hidden=192 student.prune.ffn=768' PRUNE_NAME=h6w192f768 SEEDS=42).
PRUNE ?= student.prune.ffn=384
PRUNE_NAME ?= ffn384
PRUNE_ROWS ?= student_alone kd_only_data recipe_data
quality-pruned: $(STAMP)  ## width-pruned students of the fast pair on SST-2 (PRUNE, PRUNE_NAME, SEEDS, ONLY) -> bench/results/quality_pruned_PRUNE_NAME.md
	$(BIN)/python scripts/glue_suite.py --shrink --tasks sst2 --seeds $(SEEDS) --epochs $(EPOCHS) --data-dir $(GLUE) \
		--out outputs/pruned_$(PRUNE_NAME) --teacher minilm-l6 --teacher-lr 5e-5 --student pruned \
		--student-extra $(PRUNE) --student-label "all-MiniLM-L6-v2 fine-tuned on $(FAST_NAME_sst2), pruned in width ($(PRUNE))" \
		--extra train.num_threads=1 $(FAST_EXTRA_sst2) --data-extra $(FAST_DATA_sst2) --no-speed \
		--only $(or $(strip $(ONLY)),$(PRUNE_ROWS)) --md bench/results/quality_pruned_$(PRUNE_NAME).md

quality-fast-summary: $(STAMP)  ## SST-2, MRPC and CoLA side by side and the bar, from quality.jsonl -> bench/results/quality_shrink.md
	$(BIN)/python scripts/shrink_summary.py --out $(FAST_OUT)
