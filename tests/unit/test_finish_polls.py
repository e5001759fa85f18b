"""A store with deferred deliveries (Firestore, firestore_pages.py) finishes its runs by
polling: no delivery looks for the finish, the fan-out queues a look, and a look that finds
deliveries open queues the next one, later each time. Here on a SQLite store that says it
defers (its answers are exact), with the clock moved by the test."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from herald.adapters.embedded.sqlite_store import SQLiteStore
from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus, RunStatus
from herald.services import delivery, runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import FINISH_RUN, SEND_DELIVERY
from tests import factories
from tests.drive import drain


class DeferringStore(SQLiteStore):
    deferred_deliveries = True


def polling_container(tmp_path):
    c = factories.container(tmp_path)
    c.store = DeferringStore(tmp_path / "deferring.db")
    apply_definitions(c, [factories.report(schedule=None)])
    return c


def looks(c) -> list:
    return [t for t in c.queue.pending if t.path == FINISH_RUN]


def test_the_run_finishes_at_the_first_look_after_its_last_delivery(tmp_path):
    c = polling_container(tmp_path)
    run, _ = runs.start_manual_run(c, "board-pack", request_id="poll")
    drain(c)  # render, fan-out, every send: none of them looks for the finish
    assert c.store.get_run(run.id).status == RunStatus.DELIVERING
    [look] = looks(c)
    assert look.eta is not None and c.clock.now() < look.eta <= c.clock.now() + timedelta(seconds=3)
    sends = [t for t in c.queue.tasks.values() if t.path == SEND_DELIVERY]
    assert sends and all(t.payload["seed"]["id"] == t.payload["delivery_id"] for t in sends)  # the claim's seed
    c.clock.set(look.eta)
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED
    assert looks(c) == []  # done: no more looks


def test_a_look_that_finds_deliveries_open_looks_again_later_each_time(tmp_path):
    c = polling_container(tmp_path)
    run, _ = runs.start_manual_run(c, "board-pack", request_id="slow")
    drain(c, path="/tasks/runs/execute")  # fanned out, nothing sent yet
    etas = []
    for _ in range(8):
        [look] = looks(c)
        etas.append(look.eta)
        c.clock.set(look.eta)
        drain(c, path=FINISH_RUN)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(etas)]
    assert gaps[0] < gaps[-1] and max(gaps) <= 1.5 * runs.FINISH_POLL_MOST_SECONDS, gaps
    assert c.store.get_run(run.id).status == RunStatus.DELIVERING
    drain(c)  # the sends (due all along)
    [look] = looks(c)
    c.clock.set(look.eta)
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED


def test_two_chains_at_the_same_step_ask_for_one_look(tmp_path):
    c = polling_container(tmp_path)
    run, _ = runs.start_manual_run(c, "board-pack", request_id="twice")
    drain(c, path="/tasks/runs/execute")
    [look] = looks(c)
    c.clock.set(look.eta)
    runs.finish_run(c, run.id, look.payload["polls"])  # a look retried after it queued the next
    c.queue.pending.remove(look)
    c.clock.set(look.eta + timedelta(milliseconds=300))
    runs.finish_run(c, run.id, look.payload["polls"])
    assert len(looks(c)) == 1


def test_a_send_task_seed_is_used_only_as_a_fan_out_makes_it(tmp_path):
    c = polling_container(tmp_path)
    runs.start_manual_run(c, "board-pack", request_id="seeds")
    drain(c, path="/tasks/runs/execute")
    send = next(t for t in c.queue.pending if t.path == SEND_DELIVERY)
    seed = Delivery.model_validate(send.payload["seed"])
    now = c.clock.now()
    assert delivery.usable_seed(seed, seed.id, now) == seed
    tampered = [
        seed.model_copy(update={"attempts": 10**30}),  # past Firestore's int64
        seed.model_copy(update={"events": {"x": [[1]]}}),  # arrays in arrays: Firestore refuses them
        seed.model_copy(update={"created_at": datetime.max.replace(tzinfo=UTC)}),  # its TTL would overflow
        seed.model_copy(update={"status": DeliveryStatus.SENT}),
    ]
    assert [delivery.usable_seed(s, seed.id, now) for s in tampered] == [None] * len(tampered)
    assert delivery.usable_seed(seed, "another-delivery", now) is None
