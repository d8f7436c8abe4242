# optreg: `make demo` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The machines provide the CPU build of torch 2.13.0 as a local wheel (pip's find-links);
# asking for the +cpu local version guarantees that no CUDA packages are ever pulled.
TORCH  := torch==2.13.0+cpu

.PHONY: setup demo test test-all bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" || { echo "error: the CPU wheel $(TORCH) was not found (pip find-links)"; exit 1; }
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m optreg.cli run optimizers --out runs/demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 -m "not slow"

test-all: $(STAMP) lint
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) -m benchmarks.run --out BENCHMARKS.md

clean:
	rm -rf $(VENV) runs build dist .pytest_cache .ruff_cache
