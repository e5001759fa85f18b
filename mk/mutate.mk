# `make mutate`: mutation testing (mutmut, from PyPI) of service/herald/domain and
# service/herald/services against the fast unit and contract tests. Not part of `make
# test` or CI: it takes a while. Prints the kill rate and writes every surviving mutant
# (with its diff) to var/mutate/report.txt. Config: [tool.mutmut] in pyproject.toml.
#   make mutate                                  # domain and services
#   make mutate MUTATE_ONLY='herald.domain.*'    # one package (mutant-name globs)
# Two stages (tests/conftest.py): stage 1 tests every mutant without the slow
# `mutation_stage2` property tests, stage 2 tests stage 1's survivors with every test.
MUTMUT_VERSION := 3.8.1
MUTATE_DIR := var/mutate
MUTATE_WORK := $(MUTATE_DIR)/work
MUTATE_REPORT ?= $(MUTATE_DIR)/report.txt
MUTATE_ONLY ?= herald.domain.* herald.services.*
MUTATE_CHILDREN ?= 2
MUTMUT := $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATE_CHILDREN)

.PHONY: mutate

mutate: venv
	$(PIP) install -q mutmut==$(MUTMUT_VERSION)
	$(PY) -m tests.support.mutation prepare $(MUTATE_WORK)
	cd $(MUTATE_WORK) && HERALD_MUTATION=1 HERALD_MUTATION_STAGE=1 $(MUTMUT) $(foreach g,$(MUTATE_ONLY),'$(g)')
	$(PY) -m tests.support.mutation survivors $(MUTATE_WORK) --only $(foreach g,$(MUTATE_ONLY),'$(g)') > $(MUTATE_DIR)/stage2.txt
	if [ -s $(MUTATE_DIR)/stage2.txt ]; then cd $(MUTATE_WORK) && HERALD_MUTATION=1 xargs $(MUTMUT) < $(abspath $(MUTATE_DIR))/stage2.txt; fi
	$(PY) -m tests.support.mutation report $(MUTATE_WORK) $(MUTATE_REPORT) --only $(foreach g,$(MUTATE_ONLY),'$(g)')
