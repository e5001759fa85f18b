"""Shared pytest configuration. Fixture modules register themselves below."""

import os

import pytest
from hypothesis import Phase, settings

pytest_plugins = [
    "tests.support.emulators",
    "tests.support.gcp_emulators",
    "tests.support.fixtures",
]

# `make mutate` (tests/support/mutation.py) sets HERALD_MUTATION. A property test that
# kills a mutant would then spend up to a minute shrinking the failing example; the
# verdict is the same without shrinking, so the mutation run skips that phase.
if os.environ.get("HERALD_MUTATION"):
    settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)
    settings.load_profile("mutation")


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Stage 1 of a mutation run tests each mutant without the slow `mutation_stage2`
    # tests; stage 2 runs stage 1's survivors with every test. A mutant killed without
    # them is killed with them, so the verdicts are the same. Only mutants are tested
    # this way: mutmut's own passes ("stats", "fail") run every test.
    stage_1 = os.environ.get("HERALD_MUTATION_STAGE") == "1"
    mutant = "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", "")
    if stage_1 and mutant and item.get_closest_marker("mutation_stage2"):
        pytest.skip("mutation stage 1: this mutant meets the slow tests in stage 2")
