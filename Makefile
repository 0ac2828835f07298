# amd_nb — the two commands of the README, plus developer helpers.
#   make demo   set up the environment if needed, then run the main job on the embedded emoji set (runs/demo/report.html)
#   make test   set up the environment if needed, then run every test (notebooks + tutorials, pytest, docs pre-render)
#   make docs   build the docs site into _docs/ (needs Quarto)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: demo test docs env check-nbdev export clean-nb

$(BIN)/.amd_nb-installed: settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip check
	touch $@

env: $(BIN)/.amd_nb-installed

demo: env
	$(BIN)/amd-demo --preset demo --out $(OUT)

# One BLAS/OpenMP thread per process: the notebooks run two at a time, and small matrix products on
# two contended threads run many times slower. Tests never need the network: HF_HUB_OFFLINE stops
# hub clients from retrying for tens of seconds.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1

test: env
	$(TEST_ENV) $(BIN)/nbdev_test --n_workers 2 --timing
	$(TEST_ENV) $(BIN)/python -m pytest -q tests
	$(TEST_ENV) $(BIN)/python scripts/check_docs.py

# The docs site: nbdev processes the notebooks (what `make test` checks) and Quarto renders them.
docs: env
	touch README.md   # README.md is the source (index.ipynb includes it): keep nbdev_docs from re-rendering it
	$(BIN)/nbdev_docs

# Notebooks are the source of truth: exporting and cleaning must not change committed files.
check-nbdev: env
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	git diff --exit-code -- amd_nb nbs || { echo "nbdev_export/nbdev_clean changed committed files: export from the notebooks and commit both"; exit 1; }
	test -z "$$(git status --porcelain -- amd_nb nbs)" || { git status --porcelain -- amd_nb nbs; echo "untracked exported/cleaned files"; exit 1; }

export: env
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean
