# fadkd: `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-slow lint format clean models bench-peers lm-table bench bench-multirun quality quality-shrink

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
