# The Kimi field guide: two commands.
#   make book   build the HTML book into _build/html (verifies every claim, executes the notebooks on the CPU)
#   make test   run the test suite (fast: the tests marked slow are left out)
# and, for CI and before a pull request:
#   make test-all   every test, the slow ones too (full grids, full-size parity, notebooks, training)
#   make lint       ruff check and ruff format --check
#   make test-fla   the parity tests again with flash-linear-attention (fla-core) installed into .venv
# Both create .venv on first use and install pinned versions from constraints.txt.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdalib-installed
PYTEST_ARGS ?=
# Archived source texts: the repository's snapshots/ folder.
export KDALIB_SNAPSHOTS ?= snapshots
# The book executes notebooks at their small size on the CPU; a GPU run is `kdalib repro`.
export KDALIB_DEVICE ?= cpu
export KDALIB_PROFILE ?= smoke
# Strict verification (missing snapshots are errors) where CI asks for it.
VERIFY_FLAGS ?= $(if $(filter true 1,$(CI)),--strict,)

.PHONY: help install test test-all test-fla test-browser lint book verify clean constraints

help:
	@echo "make book   build the book into _build/html (verify claims, run notebooks on the CPU, strict Sphinx build)"
	@echo "make test   run the test suite (pytest, without the tests marked slow)"
	@echo "make test-all   every test, the slow ones too (what CI runs)"
	@echo "make lint   ruff check and ruff format --check"
	@echo "make test-browser   after make book: read the built book in headless Chromium (tests/browser)"
	@echo "make test-fla   install fla-core into $(VENV) and run the parity tests against transformers with it"
	@echo "make clean  remove _build (keeps .venv)"

$(BIN)/python:
	@echo ">>> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency declarations change. A torch already in the
# venv (a user's CUDA build) is kept: its pins (torch, and the triton it ships
# with) are dropped from the constraints.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	@echo ">>> installing kdalib and its pinned dependencies into $(VENV)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo ">>> keeping the torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	  grep -vE '^(torch|triton)==' constraints.txt > $(VENV)/constraints.txt; \
	else \
	  cp constraints.txt $(VENV)/constraints.txt; \
	fi
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt -e '.[book,test]'
	@touch $@

install: $(STAMP)

test: $(STAMP)
	@echo ">>> pytest $(PYTEST_ARGS)"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# pyproject's addopts deselect the slow tests; a later -m replaces that selection.
test-all: $(STAMP)
	@echo ">>> pytest -m 'slow or not slow' $(PYTEST_ARGS)"
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	@echo ">>> ruff check, ruff format --check"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Most KDA users have flash-linear-attention installed, and transformers then swaps its Kimi Linear
# functions for FLA's Triton kernels: the parity tests must still compare against transformers'
# PyTorch path. fla-core is pure Python; its pin in constraints.txt keeps torch and triton as they are.
FLA_TESTS := tests/nn/test_transformers_parity.py tests/ops/test_ops_transformers_peer.py tests/nn/test_kda_checkpoint.py
test-fla: $(STAMP)
	@echo ">>> installing fla-core into $(VENV)"
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt fla-core
	$(BIN)/python -c "import fla, torch, importlib.metadata as m; print('fla-core', m.version('fla-core'), 'with torch', torch.__version__, 'triton', m.version('triton'))"
	@echo ">>> pytest (parity with flash-linear-attention installed) $(PYTEST_ARGS)"
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS) $(FLA_TESTS)

# The built book in headless Chromium (tests/browser): console errors, layout, popovers, links,
# search, screenshots in _build/screenshots. Installs Debian's chromium when none is found and
# apt-get may be used; fails, rather than skips, when the book or the browser is missing.
test-browser: $(STAMP)
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
	    && ! command -v google-chrome >/dev/null && [ -z "$${KDALIB_CHROMIUM:-}" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	  echo ">>> no Chromium found: installing Debian's chromium"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; \
	fi
	@echo ">>> pytest -m browser tests/browser"
	KDALIB_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m browser tests/browser $(PYTEST_ARGS)

verify: $(STAMP)
	@echo ">>> kdalib verify $(VERIFY_FLAGS) (snapshots: $(KDALIB_SNAPSHOTS))"
	$(BIN)/kdalib verify $(VERIFY_FLAGS) --json _build/verify.json

# jupyter-cache keys on cell text only, and Sphinx does not even re-read a notebook
# whose file is unchanged, so a changed kdalib would be served stale outputs: drop
# the execution cache and the notebooks' parsed state whenever kdalib's source or the
# notebooks change.
book: verify
	@echo ">>> checking the notebook cache against kdalib's content"
	@mkdir -p _build
	@digest=$$(cat $$(find kdalib notebooks -name '*.py' -o -name '*.ipynb' | grep -v '/results/' | sort) | sha256sum | cut -c1-16); \
	if [ "$$(cat _build/.kdalib-digest 2>/dev/null)" != "$$digest" ]; then \
	  echo ">>> kdalib or notebooks changed: notebooks will be re-executed"; \
	  rm -rf _build/.jupyter_cache _build/.doctrees _build/jupyter_execute; \
	fi; \
	echo "$$digest" > _build/.kdalib-digest
	@echo ">>> jupyter-book build (strict: -W -n --keep-going; notebooks on $(KDALIB_DEVICE), profile $(KDALIB_PROFILE))"
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo ">>> the book is at _build/html/index.html"

clean:
	rm -rf _build

# Refresh constraints.txt from the current virtualenv (after changing pyproject.toml).
constraints: $(STAMP)
	@{ head -3 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+.*/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
