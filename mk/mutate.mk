# `make mutate`: mutation testing (mutmut, from PyPI) of service/herald/domain and
# service/herald/services against the fast unit and contract tests. Not part of `make
# test` or CI: it takes a while. Prints the kill rate and writes every surviving mutant
# (with its diff) to var/mutate/report.txt. Config: [tool.mutmut] in pyproject.toml.
#   make mutate                                  # domain and services
#   make mutate MUTATE_ONLY='herald.domain.*'    # one package (mutant-name globs)
MUTMUT_VERSION := 3.8.1
MUTATE_DIR := var/mutate
MUTATE_WORK := $(MUTATE_DIR)/work
MUTATE_REPORT ?= $(MUTATE_DIR)/report.txt
MUTATE_ONLY ?= herald.domain.* herald.services.*
MUTATE_CHILDREN ?= 2

.PHONY: mutate

mutate: venv
	$(PIP) install -q mutmut==$(MUTMUT_VERSION)
	$(PY) -m tests.support.mutation prepare $(MUTATE_WORK)
	cd $(MUTATE_WORK) && $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATE_CHILDREN) $(foreach g,$(MUTATE_ONLY),'$(g)')
	$(PY) -m tests.support.mutation report $(MUTATE_WORK) $(MUTATE_REPORT) --only $(foreach g,$(MUTATE_ONLY),'$(g)')
