import itertools

import pytest

from herald.domain.errors import InvalidTransition
from herald.domain.states import (
    DELIVERY_TRANSITIONS,
    RUN_TRANSITIONS,
    DeliveryStatus,
    RunStatus,
    check_delivery,
    check_run,
    run_outcome,
)

RUN_EDGES = list(itertools.product(RunStatus, RunStatus))
DELIVERY_EDGES = list(itertools.product(DeliveryStatus, DeliveryStatus))


@pytest.mark.parametrize(("current", "target"), RUN_EDGES, ids=[f"{a}->{b}" for a, b in RUN_EDGES])
def test_every_run_edge(current: RunStatus, target: RunStatus):
    if target in RUN_TRANSITIONS[current]:
        check_run(current, target)
    else:
        with pytest.raises(InvalidTransition):
            check_run(current, target)


@pytest.mark.parametrize(("current", "target"), DELIVERY_EDGES, ids=[f"{a}->{b}" for a, b in DELIVERY_EDGES])
def test_every_delivery_edge(current: DeliveryStatus, target: DeliveryStatus):
    if target in DELIVERY_TRANSITIONS[current]:
        check_delivery(current, target)
    else:
        with pytest.raises(InvalidTransition):
            check_delivery(current, target)


def test_the_tables_cover_every_state():
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert set(DELIVERY_TRANSITIONS) == set(DeliveryStatus)


def test_final_run_states_have_no_way_out():
    for status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.MISSED, RunStatus.SKIPPED):
        assert RUN_TRANSITIONS[status] == frozenset()


def test_a_bounce_never_turns_back_into_delivered():
    assert DeliveryStatus.DELIVERED not in DELIVERY_TRANSITIONS[DeliveryStatus.BOUNCED]
    assert DeliveryStatus.BOUNCED in DELIVERY_TRANSITIONS[DeliveryStatus.DELIVERED]


@pytest.mark.parametrize(
    ("delivered", "failed", "outcome"),
    [(3, 0, RunStatus.SUCCEEDED), (2, 1, RunStatus.PARTIAL), (0, 3, RunStatus.FAILED), (0, 0, RunStatus.SUCCEEDED)],
)
def test_run_outcome(delivered: int, failed: int, outcome: RunStatus):
    assert run_outcome(delivered, failed) == outcome
