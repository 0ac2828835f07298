# amd_nb — the two commands of the README, plus developer helpers.
#   make demo   set up the environment if needed, then run the main job on the embedded emoji set (runs/demo/report.html)
#   make test   set up the environment if needed, then run every test (notebooks + tutorials, pytest, docs pre-render)
#   make docs   build the docs site into _docs/ (needs Quarto; says how to get it when it is missing)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: demo test docs env check-nbdev export clean-nb browser quarto

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

test: env browser
	$(TEST_ENV) scripts/run_tests.sh $(BIN)   # every stage runs, even after one fails; a summary at the end

# The browser test (tests/test_browser.py) drives Debian's Chromium with Playwright (installed into the venv by
# `env`, from settings.ini's dev requirements). Install Chromium when it is missing and this user may (root, or
# password-less sudo); otherwise say so: the test then skips with the same message.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ] || ! command -v apt-get >/dev/null; then \
	    echo "browser: $(CHROMIUM) is missing and cannot be installed here (needs apt-get as root); the browser test will skip"; \
	  else echo "browser: installing Debian's chromium for the browser test"; \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; fi; }

# The docs site: nbdev processes the notebooks (what `make test` checks, up to Quarto's input) and Quarto renders
# them. Quarto is a standalone program: check for it first, so that nbdev never tries to install it (with sudo,
# and then `pip install -e .[dev]` into whatever pip is on PATH).
quarto:
	@command -v quarto >/dev/null || { \
	  echo "make docs: Quarto is not installed (nbdev renders the site with it; nothing was installed or changed)."; \
	  echo "  Get it from https://quarto.org/docs/get-started/ (Linux: the .deb, 'sudo dpkg -i quarto-*.deb', or the"; \
	  echo "  .tar.gz with its bin/ on PATH), then run 'make docs' again."; \
	  echo "  'make test' already checks the docs up to Quarto's input (scripts/check_docs.py)."; exit 1; }

docs: quarto env
	touch README.md   # README.md is the source (index.ipynb includes it): keep nbdev_docs from re-rendering it
	PATH="$$PWD/$(BIN):$$PATH" $(BIN)/nbdev_docs

# Notebooks are the source of truth: exporting and cleaning must not change committed files.
check-nbdev: env
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	git diff --exit-code -- amd_nb nbs || { echo "nbdev_export/nbdev_clean changed committed files: export from the notebooks and commit both"; exit 1; }
	test -z "$$(git status --porcelain -- amd_nb nbs)" || { git status --porcelain -- amd_nb nbs; echo "untracked exported/cleaned files"; exit 1; }

export: env
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean
