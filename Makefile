# Herald: `make run` starts it on the embedded backend; `make test` runs the whole suite.
# Each mk/*.mk adds the installs and tools its part of the suite needs to TEST_DEPS.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TOOLS := .tools
TEST_DEPS :=

.PHONY: venv run test lint typecheck bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

-include mk/*.mk

run: venv ## start Herald on the embedded backend with the example reports
	$(VENV)/bin/herald serve --reports examples/reports.yaml

test: venv $(TEST_DEPS) ## install what the tests need and run the whole suite
	$(VENV)/bin/ruff check service tests jobs bench tools
	$(VENV)/bin/ruff format --check service tests jobs bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check service tests jobs bench tools
	$(VENV)/bin/ruff format --check service tests jobs bench tools

typecheck: venv
	$(VENV)/bin/mypy

bench: venv $(TEST_DEPS) ## measured speed; not part of make test
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
