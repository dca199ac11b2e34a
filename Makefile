# lameduck: `make test` is what CI runs; `make test-unit` needs no cluster.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv lint types contracts unit test-unit test crds check-crds clean

help:
	@echo "make test        lint, types, import contracts, unit tests (what CI runs)"
	@echo "make test-unit   the same without a cluster"
	@echo "make crds        regenerate crds/ from operator/lameduck_operator/crdgen.py"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check operator sidecar tests
	$(BIN)/ruff format --check operator sidecar tests

types: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests/unit

contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

test-unit: lint types contracts unit

test: test-unit

crds: $(STAMP)
	$(BIN)/python -m lameduck_operator.crdgen crds

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
