# make demo | make test | make bench | make bench-live | make bench-engines | make bench-quality | make gpu-check. Each creates .venv and installs swapstream into it first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The layer rule (pyproject.toml, [tool.importlinter]): one line when every contract is kept; a
# failing contract prints lint-imports' whole report, with the import that breaks it, and fails.
LINT_IMPORTS = out=$$($(BIN)/lint-imports --no-logo 2>&1) || { echo "$$out"; exit 1; }; \
	echo "layer contracts (lint-imports): $$(echo "$$out" | grep -c ' KEPT$$') of $$(echo "$$out" | grep -c -E ' (KEPT|BROKEN)$$') kept"

.PHONY: setup demo test bench bench-live bench-engines bench-quality gpu-check lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch 2.13.0 lies on this platform's disk: install it first so nothing
	# pulls a multi-GB CUDA build (docs/platform.md).
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/swapstream demo -o demo_output

test: $(STAMP)
	$(BIN)/ruff check .
	@$(LINT_IMPORTS)
	$(BIN)/python -m pytest -q -ra --durations=20

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_convert.py

bench-live: $(STAMP)
	$(BIN)/python benchmarks/bench_live.py

bench-engines: $(STAMP)
	$(BIN)/python benchmarks/bench_engines.py

# swap quality (identity, landmarks, re-detection, flicker, seam) after the demo's training budget
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/bench_quality.py

# every GPU test and benchmark in one run with one table (needs a CUDA GPU; exit 2 without one)
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check .
	@$(LINT_IMPORTS)

clean:
	rm -rf $(VENV) demo_output .pytest_cache
