"""The core pipeline on fakes and a moved clock: tick -> run -> render -> fan-out -> send."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.clock import FakeClock
from herald.services import delivery, runs
from herald.services.scheduling import apply_definitions, tick
from tests import factories
from tests.drive import drain

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # 07:00 London = 07:00 UTC in November


@pytest.fixture
def clock():
    return FakeClock(SLOT - timedelta(minutes=1))


@pytest.fixture
def c(tmp_path, clock):
    container = factories.container(tmp_path, clock)
    apply_definitions(container, [factories.report(heartbeat_url="https://hc.example/ping/abc")])
    return container


def test_tick_creates_one_run_per_slot_and_advances_the_schedule(c, clock):
    assert tick(c).started == []  # not due yet
    clock.set(SLOT + timedelta(seconds=5))
    first = tick(c)
    again = tick(c)
    assert len(first.started) == 1 and again.started == []
    stored = c.store.get_report("board-pack")
    assert stored.next_fire_at == SLOT + timedelta(days=1)
    run = c.store.get_run(first.started[0])
    assert run.slot == SLOT and run.period == "2026-11-02" and run.status == RunStatus.PENDING


def test_a_late_tick_catches_up_and_older_slots_are_missed(c, clock):
    clock.set(SLOT + timedelta(days=2, minutes=5))  # the tick was dead for two days
    result = tick(c)
    assert len(result.started) == 1  # today's slot, 5 minutes late: within the misfire window
    assert len(result.missed) == 2
    statuses = sorted(str(c.store.get_run(r).status) for r in result.missed)
    assert statuses == ["missed", "missed"]


def test_a_full_run_delivers_once_per_recipient_and_heartbeats(c, clock):
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.summary == "Board pack for 2026-11-02"
    assert {k: len(v) for k, v in c.mailer.sent.items()} == {"a@example.com": 1, "b@example.com": 1}
    message = c.mailer.sent["a@example.com"][0]
    assert message.custom_args == {"delivery_id": message.idempotency_key, "run_id": run_id, "report_id": "board-pack"}
    assert "/l/" in message.text and "Board pack for 2026-11-02" in message.text
    assert [state for _, state, _ in c.heartbeat.pings] == ["start", "success"]
    assert c.blobs.exists(run.artifact_key)


def test_redelivered_tasks_create_nothing_twice(c, clock):
    clock.set(SLOT)
    run_id = tick(c).started[0]
    for _ in range(3):
        runs.execute_run(c, run_id)
    assert c.store.delivery_counts(run_id) == {"queued": 2}
    drain(c)
    for d in c.store.list_deliveries(run_id=run_id).items:
        assert delivery.send_delivery(c, d.id).status == "done"  # a duplicate send task
    assert sum(len(v) for v in c.mailer.sent.values()) == 2
    runs.finish_run(c, run_id)
    assert len(c.store.list_alerts()) == 0
    assert [state for _, state, _ in c.heartbeat.pings] == ["start", "success"]


def test_transient_failures_retry_at_2_8_32_minutes_then_fail(c, clock):
    c.mailer.script["a@example.com"] = [DeliveryError("timeout", permanent=False) for _ in range(10)]
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    for minutes in (2, 8, 32):
        tried = len(c.mailer.attempts["a@example.com"])
        clock.advance(minutes=minutes, seconds=-1)
        drain(c)
        assert len(c.mailer.attempts["a@example.com"]) == tried  # a second early: not yet
        clock.advance(seconds=1)
        drain(c)
    attempts = c.mailer.attempts["a@example.com"]
    gaps = [round((b - a).total_seconds() / 60, 3) for a, b in itertools.pairwise(attempts)]
    assert gaps == [2, 8, 32]
    failed = c.store.list_deliveries(run_id=run_id, status=DeliveryStatus.FAILED).items
    assert [d.recipient for d in failed] == ["a@example.com"]
    assert failed[0].attempts == 4 and "gave up after 4 attempts" in failed[0].last_error
    assert c.store.get_run(run_id).status == RunStatus.PARTIAL
    (alert,) = c.store.list_alerts()
    assert alert.target == "cfo@example.com" and "a@example.com" in alert.body and alert.sent
    assert [state for _, state, _ in c.heartbeat.pings] == ["start", "fail"]


def test_a_permanent_failure_is_tried_once_and_alerts_the_owner_once(c, clock):
    c.mailer.script["b@example.com"] = [DeliveryError("550 no such user", permanent=True)]
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    assert len(c.mailer.attempts["b@example.com"]) == 1
    clock.advance(hours=1)
    drain(c)
    runs.finish_run(c, run_id)  # a redelivered finish task
    assert len(c.mailer.attempts["b@example.com"]) == 1
    alerts = c.store.list_alerts()
    assert len(alerts) == 1 and "b@example.com (email): 550 no such user" in alerts[0].body
    owner_mail = c.mailer.sent["cfo@example.com"]
    assert len(owner_mail) == 1


def test_a_failed_render_creates_no_delivery_and_alerts_the_owner(c, clock):
    c.source.fail = "reporting API answered 500"
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.FAILED and "500" in run.error
    assert c.store.delivery_counts(run_id) == {}
    (alert,) = c.store.list_alerts()
    assert alert.kind == "run_failed"
    assert [state for _, state, _ in c.heartbeat.pings] == ["start", "fail"]


def test_rate_limit_hint_stretches_the_delay(c, clock):
    c.mailer.script["a@example.com"] = [DeliveryError("429", permanent=False, retry_after=600)]
    clock.set(SLOT)
    tick(c)
    drain(c)
    clock.advance(minutes=9)
    drain(c)
    assert len(c.mailer.attempts["a@example.com"]) == 1
    clock.advance(minutes=1)
    drain(c)
    assert len(c.mailer.attempts["a@example.com"]) == 2


def test_a_delivery_held_by_a_live_lease_is_not_sent_twice(c, clock):
    clock.set(SLOT)
    run_id = tick(c).started[0]
    runs.execute_run(c, run_id)
    d = c.store.list_deliveries(run_id=run_id).items[0]
    assert c.store.claim_delivery(d.id, clock.now(), clock.now() + timedelta(minutes=2)) is not None
    outcome = delivery.send_delivery(c, d.id)
    assert outcome.status == "leased" and 60 <= outcome.retry_after <= 121
    clock.advance(minutes=3)  # the holder died; its lease ran out
    assert delivery.send_delivery(c, d.id).status == "sent"


def test_manual_runs_are_idempotent_by_request_id(c):
    first, created = runs.start_manual_run(c, "board-pack", {"region": "EU"}, request_id="req-1")
    again, created_again = runs.start_manual_run(c, "board-pack", {"region": "EU"}, request_id="req-1")
    assert created and not created_again and first.id == again.id
    with pytest.raises(runs.UnknownReport):
        runs.start_manual_run(c, "nope")


def test_changing_a_schedule_recomputes_next_fire_but_reapplying_keeps_it(c, clock):
    before = c.store.get_report("board-pack").next_fire_at
    apply_definitions(c, [factories.report(heartbeat_url="https://hc.example/ping/abc")])
    assert c.store.get_report("board-pack").next_fire_at == before
    apply_definitions(c, [factories.report(schedule={"cron": "0 9 * * *", "timezone": "UTC"})])
    assert c.store.get_report("board-pack").next_fire_at == datetime(2026, 11, 2, 9, tzinfo=UTC)


def test_a_summary_naming_a_param_the_run_lacks_renders_empty(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [factories.report(summary="{name} for {params[client]}")])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="no-params")
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED
    assert c.store.get_run(run.id).summary == "Board pack for "
