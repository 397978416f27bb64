# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs everything it needs on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench vectors lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/doorsim demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench protocol

vectors: $(STAMP)
	$(BIN)/python scripts/make_vectors.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy protocol infra controller phone_bridge conformance simulators bench scripts

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
