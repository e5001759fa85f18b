# Herald: `make run` starts it on the embedded backend; `make test` runs the whole suite.
# Each mk/*.mk adds the installs and tools its part of the suite needs to TEST_DEPS.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TOOLS := .tools
TEST_DEPS :=

.PHONY: venv runtime run run-gcp test lint typecheck bench clean

# The runtime alone (requirements.txt): what `make run` needs and all it installs.
$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

# The runtime plus the test and lint tools (requirements-dev.txt).
$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

runtime: $(VENV)/.runtime
venv: $(VENV)/.installed

-include mk/*.mk

run: runtime ## start Herald on the embedded backend with the example reports (installs the runtime only)
	@echo "herald is in $(VENV)/bin: 'source $(VENV)/bin/activate' puts it on PATH"
	$(VENV)/bin/herald serve --reports examples/reports.yaml

# The gcp backend on this machine (tools/gcp_stack.py): Firestore, Pub/Sub and Cloud Tasks
# emulators, fake-gcs-server, Terraform's queue / topics / push subscriptions / bucket,
# the worker, ingress and admin roles under gunicorn behind a local Google front end
# (OIDC) and IAP, the example reports applied, the tick every minute. Ctrl-C stops it all.
run-gcp: runtime gcp-emulators ## the whole gcp backend on one machine, on emulators
	$(PY) -m tools.gcp_stack

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
