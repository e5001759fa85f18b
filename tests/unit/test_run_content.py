"""A run's content (its rendered summary and its report's definition) is read once per
process per run, and every recipient of one run gets the same message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.clock import FakeClock
from herald.services import delivery, runs
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import EXECUTE_RUN, SEND_DELIVERY
from tests import factories
from tests.drive import drain

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
RECIPIENTS = [f"r{i}@example.com" for i in range(6)]


class CountingStore:
    """The real store, with its run and report reads counted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = {"get_run": 0, "get_report": 0}

    def __getattr__(self, name: str) -> Any:
        if name in self.reads:
            self.reads[name] += 1
        return getattr(self.inner, name)


@pytest.fixture
def c(tmp_path):
    clock = FakeClock(SLOT - timedelta(minutes=1))
    container = factories.container(tmp_path, clock)
    apply_definitions(container, [factories.report(recipients={"email": RECIPIENTS})])
    clock.set(SLOT)
    return container


def _rendered(c) -> str:
    (run_id,) = tick(c).started
    for task in c.queue.take_due(c.clock.now(), EXECUTE_RUN):
        runs.execute_run(c, task.payload["run_id"])
    assert c.store.get_run(run_id).status == RunStatus.DELIVERING
    return run_id


def test_sends_of_one_run_read_the_run_and_its_report_once(c):
    run_id = _rendered(c)
    counting = CountingStore(c.store)
    c.store = counting
    for task in c.queue.take_due(c.clock.now(), SEND_DELIVERY):
        assert delivery.send_delivery(c, task.payload["delivery_id"]).status == "sent"
    assert sum(len(v) for v in c.mailer.sent.values()) == len(RECIPIENTS)
    assert counting.reads == {"get_run": 1, "get_report": 1}  # not one each per recipient
    drain(c)
    assert c.store.get_run(run_id).status == RunStatus.SUCCEEDED


def test_a_definition_change_reaches_sends_within_a_minute(c):
    run_id = _rendered(c)
    sends = c.queue.take_due(c.clock.now(), SEND_DELIVERY)
    delivery.send_delivery(c, sends[0].payload["delivery_id"])
    apply_definitions(c, [factories.report(name="Renamed pack", recipients={"email": RECIPIENTS})])
    delivery.send_delivery(c, sends[1].payload["delivery_id"])  # within the minute: what was read
    c.clock.advance(seconds=60)
    for task in sends[2:]:
        delivery.send_delivery(c, task.payload["delivery_id"])
    subjects = [c.mailer.sent[r][0].subject for r in RECIPIENTS]
    assert subjects[:2] == ["Board pack — 2026-11-02"] * 2
    assert subjects[2:] == ["Renamed pack — 2026-11-02"] * (len(RECIPIENTS) - 2)
    assert len(c.store.list_deliveries(run_id=run_id, status=DeliveryStatus.SENT).items) == len(RECIPIENTS)


def test_a_cache_keeps_no_store_alive(tmp_path):
    import gc
    import weakref

    from herald.adapters.embedded.sqlite_store import SQLiteStore
    from herald.services import content

    store = SQLiteStore(tmp_path / "gone.db")
    content.for_store(store).get(store, "no-such-run", SLOT)
    alive = weakref.ref(store)
    store.close()
    del store
    gc.collect()
    assert alive() is None


def test_a_run_not_rendered_is_not_kept(c, tmp_path):
    from herald.services.content import ContentCache

    (run_id,) = tick(c).started  # pending: nothing rendered to share yet
    counting = CountingStore(c.store)
    cache = ContentCache()
    assert cache.get(counting, run_id, SLOT).run.status == RunStatus.PENDING  # type: ignore[arg-type]
    assert cache.get(counting, run_id, SLOT) is not None  # type: ignore[arg-type]
    assert counting.reads["get_run"] == 2  # read again: its content may still change
    assert cache.get(counting, "no-such-run", SLOT) is None  # type: ignore[arg-type]


def test_a_render_retried_after_a_crash_sends_no_trace_of_it(tmp_path):
    clock = FakeClock(SLOT)
    c = factories.container(tmp_path, clock, retry_delays="60")
    apply_definitions(c, [factories.report(recipients={"email": RECIPIENTS[:2]})])
    real = c.source

    class FlakyOnce:
        calls = 0

        def render(self, request):
            FlakyOnce.calls += 1
            if FlakyOnce.calls == 1:
                raise ConnectionError("warehouse unreachable")
            return real.render(request)

    c.source = FlakyOnce()
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    assert "warehouse unreachable" in c.store.get_run(run.id).error  # the operator sees it meanwhile
    clock.advance(seconds=60)
    drain(c)
    done = c.store.get_run(run.id)
    assert done.status == RunStatus.SUCCEEDED and done.error == "" and done.note == ""
    received = [m for sent in c.mailer.sent.values() for m in sent]
    assert len(received) == 2
    assert not any("warehouse" in m.text or "warehouse" in m.html or "attempt" in m.text for m in received)
