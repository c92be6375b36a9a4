# The README's commands. Each does its own set-up: a .venv with the pinned requirements and the project.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test test-slow test-all test-e2e lint bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m elm_core.native  # builds the native time loops once (about 15 s); fine if it cannot
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/elmlab up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The process-level system tests (real workers, recorder, `elmlab up`), left out of `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "" 

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -m e2e

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/elmlab bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
