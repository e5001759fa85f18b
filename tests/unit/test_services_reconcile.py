"""services/reconcile.py on the embedded store with a fake clock. The promise (README
"No work without its task", reconcile.py's docstring): work with no progress within its
lease, past HERALD_RECONCILE_AFTER_SECONDS, is queued again under one deterministic task
name per subject and period, so concurrent passes queue it once; a held lease is left
alone; a run re-queued HERALD_RECONCILE_MAX_RECOVERIES times without progress fails and
its owner hears."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.records import Alert, ChannelSend, Delivery
from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.clock import FakeClock
from herald.services import reconcile as rec
from herald.services.runs import new_run
from herald.services.scheduling import apply_definitions
from herald.services.tasks import EXECUTE_RUN, FINISH_RUN, SEND_DELIVERY, SEND_NOTIFICATION
from tests import factories
from tests.drive import drain

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a multiple of the 300 s period
AFTER = timedelta(seconds=300)  # the default HERALD_RECONCILE_AFTER_SECONDS
LONG_AGO = NOW - timedelta(hours=1)


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, FakeClock(NOW))
    apply_definitions(container, [factories.report()])
    return container


def make_run(c, run_id, status, updated=LONG_AGO, **fields):
    run = new_run(factories.report(), run_id, "manual", LONG_AGO, status=status)
    run = run.model_copy(update={"updated_at": updated, **fields})
    assert c.store.create_run(run)
    return run


def make_delivery(c, run_id, recipient, status, updated=LONG_AGO, **fields):
    d = Delivery(
        id=f"{run_id}-{recipient}",
        run_id=run_id,
        report_id="board-pack",
        channel="email",
        recipient=recipient,
        status=status,
        created_at=LONG_AGO,
        updated_at=updated,
        **fields,
    )
    c.store.create_deliveries([d])
    return d


def make_alert(c, alert_id, created=LONG_AGO, **channels):
    alert = Alert(
        id=alert_id,
        kind="run_failed",
        target="cfo@example.com",
        report_id="board-pack",
        subject="s",
        body="b",
        created_at=created,
        channels=channels,
    )
    assert c.store.add_alert(alert)
    return alert


def queued(c):
    """(path, payload) of every task queued, in order (the RecordingQueue de-duplicates by name)."""
    return [(t.path, t.payload) for t in c.queue.tasks.values()]


def test_stalled_runs_are_queued_again_once_per_period(c):
    for status in (RunStatus.PENDING, RunStatus.RENDERING):
        make_run(c, f"run-{status}", status)
    make_run(c, "run-waiting", RunStatus.WAITING)  # the dependency gate has its own tasks
    make_run(c, "run-done", RunStatus.SUCCEEDED)
    result = rec.reconcile(c, NOW)
    assert sorted(result.runs) == ["run-pending", "run-rendering"]
    assert result.total == 2 and result.deliveries == [] and result.notifications == [] and result.failed == []
    assert sorted(p["run_id"] for _, p in queued(c)) == ["run-pending", "run-rendering"]
    assert {path for path, _ in queued(c)} == {EXECUTE_RUN}
    run = c.store.get_run("run-pending")
    assert run.recoveries == 1 and run.updated_at == NOW  # progress noted: not re-queued at once
    assert rec.reconcile(c, NOW + timedelta(seconds=1)).total == 0


def test_a_second_pass_in_the_same_period_queues_under_the_same_name(c):
    make_run(c, "r", RunStatus.RENDERING)
    rec.reconcile(c, NOW)
    c.store.update_run("r", updated_at=LONG_AGO)  # still no progress (e.g. a concurrent pass)
    rec.reconcile(c, NOW + timedelta(seconds=299))  # same period
    assert len(c.queue.tasks) == 1
    c.store.update_run("r", updated_at=LONG_AGO)
    rec.reconcile(c, NOW + AFTER)  # the next period: a new task
    assert len(c.queue.tasks) == 2


def test_the_period_follows_the_setting_and_is_at_least_a_second(tmp_path):
    c = factories.container(tmp_path, FakeClock(NOW), reconcile_after_seconds=0.5)
    make_run(c, "r", RunStatus.RENDERING)
    rec.reconcile(c, NOW)
    c.store.update_run("r", updated_at=LONG_AGO)
    rec.reconcile(c, NOW + timedelta(milliseconds=900))  # still inside the first 1-second period
    assert len(c.queue.tasks) == 1
    c.store.update_run("r", updated_at=LONG_AGO)
    rec.reconcile(c, NOW + timedelta(seconds=1))
    assert len(c.queue.tasks) == 2


def test_a_requeued_run_completes(c):
    make_run(c, "r", RunStatus.PENDING)
    rec.reconcile(c, NOW)
    drain(c)
    assert c.store.get_run("r").status == RunStatus.SUCCEEDED


def test_progress_within_the_period_or_a_held_lease_is_left_alone(c):
    make_run(c, "recent", RunStatus.RENDERING, updated=NOW - AFTER)  # exactly at the limit: not yet
    make_run(c, "held", RunStatus.RENDERING, lease_until=NOW + timedelta(seconds=1))
    make_run(c, "lease-over", RunStatus.RENDERING, lease_until=NOW)  # a lease ending now holds nothing
    assert rec.reconcile(c, NOW).runs == ["lease-over"]


def test_a_run_requeued_too_often_fails_and_its_owner_hears(c):
    make_run(c, "tired", RunStatus.RENDERING, recoveries=3)
    make_run(c, "one-more", RunStatus.RENDERING, recoveries=2)
    result = rec.reconcile(c, NOW)
    assert result.failed == ["tired"] and result.runs == ["one-more"] and result.total == 2
    failed = c.store.get_run("tired")
    assert failed.status == RunStatus.FAILED and failed.recoveries == 3
    assert failed.error == "made no progress after 3 recoveries (last state rendering)"
    assert failed.finished_at == NOW and failed.updated_at == NOW and failed.lease_until is None
    assert (FINISH_RUN, {"run_id": "tired"}) in queued(c)
    assert c.store.get_run("one-more").recoveries == 3
    drain(c, path=FINISH_RUN)
    (alert,) = c.store.list_alerts()
    assert alert.run_id == "tired" and "made no progress after 3 recoveries" in alert.body


def test_the_limit_of_recoveries_is_a_setting(tmp_path):
    c = factories.container(tmp_path, FakeClock(NOW), reconcile_max_recoveries=1)
    apply_definitions(c, [factories.report()])
    make_run(c, "r", RunStatus.PENDING, recoveries=1)
    assert rec.reconcile(c, NOW).failed == ["r"]
    assert c.store.get_run("r").error == "made no progress after 1 recoveries (last state pending)"


def test_a_run_that_moved_on_meanwhile_is_not_failed(c, monkeypatch):
    stale = make_run(c, "r", RunStatus.RENDERING, recoveries=3)
    c.store.update_run("r", status=RunStatus.DELIVERING)  # a worker got there first
    result = rec.ReconcileResult()
    rec._give_up(c, stale, NOW, result)
    assert result.failed == [] and c.store.get_run("r").status == RunStatus.DELIVERING
    assert queued(c) == []


def test_a_delivering_run_whose_deliveries_are_all_final_gets_its_finish_again(c):
    make_run(c, "done", RunStatus.DELIVERING)
    make_delivery(c, "done", "a@example.com", DeliveryStatus.SENT)
    make_run(c, "fresh", RunStatus.DELIVERING, updated=NOW - timedelta(seconds=10))  # finishing now
    make_delivery(c, "fresh", "a@example.com", DeliveryStatus.SENT)
    make_run(c, "held", RunStatus.DELIVERING, lease_until=NOW + timedelta(minutes=1))
    result = rec.reconcile(c, NOW)
    assert result.runs == ["done"] and result.deliveries == []
    assert queued(c) == [(FINISH_RUN, {"run_id": "done"})]
    assert c.store.get_run("done").recoveries == 0  # a lost finish is not a failed recovery


def test_stalled_deliveries_of_a_delivering_run_are_sent_again(c):
    make_run(c, "r", RunStatus.DELIVERING)
    stuck = make_delivery(c, "r", "sending@example.com", DeliveryStatus.SENDING, lease_until=LONG_AGO)
    make_delivery(c, "r", "claimed@example.com", DeliveryStatus.SENDING, lease_until=NOW + timedelta(minutes=1))
    make_delivery(c, "r", "fresh@example.com", DeliveryStatus.SENDING, updated=NOW - AFTER)
    overdue = make_delivery(c, "r", "retry@example.com", DeliveryStatus.RETRYING, next_attempt_at=NOW - AFTER * 2)
    make_delivery(c, "r", "soon@example.com", DeliveryStatus.RETRYING, next_attempt_at=NOW - AFTER)
    queued_long = make_delivery(c, "r", "queued@example.com", DeliveryStatus.QUEUED)
    make_delivery(c, "r", "new@example.com", DeliveryStatus.QUEUED, updated=NOW - timedelta(seconds=5))
    make_delivery(c, "r", "sent@example.com", DeliveryStatus.SENT)
    make_run(c, "other", RunStatus.DELIVERING, updated=NOW)  # its own deliveries are all final
    make_delivery(c, "other", "x@example.com", DeliveryStatus.SENT)
    result = rec.reconcile(c, NOW)
    assert sorted(result.deliveries) == sorted([stuck.id, overdue.id, queued_long.id])
    assert result.runs == []
    assert sorted(p["delivery_id"] for path, p in queued(c)) == sorted(result.deliveries)
    assert {path for path, _ in queued(c)} == {SEND_DELIVERY}
    drain(c)
    assert c.store.get_delivery(stuck.id).status == DeliveryStatus.SENT
    assert c.store.get_delivery(queued_long.id).status == DeliveryStatus.SENT


def test_each_delivery_is_queued_once_per_period(c):
    make_run(c, "r", RunStatus.DELIVERING)
    make_delivery(c, "r", "a@example.com", DeliveryStatus.QUEUED)
    rec.reconcile(c, NOW)
    rec.reconcile(c, NOW + timedelta(seconds=60))
    assert len(c.queue.tasks) == 1
    rec.reconcile(c, NOW + AFTER)
    assert len(c.queue.tasks) == 2


def test_deliveries_of_other_runs_are_not_mistaken_for_this_runs(c):
    make_run(c, "finished", RunStatus.DELIVERING)
    make_delivery(c, "finished", "a@example.com", DeliveryStatus.SENT)
    make_run(c, "busy", RunStatus.DELIVERING)
    open_ = make_delivery(c, "busy", "b@example.com", DeliveryStatus.QUEUED)
    result = rec.reconcile(c, NOW)
    assert result.runs == ["finished"] and result.deliveries == [open_.id]


def test_more_stalled_deliveries_than_a_default_page_are_all_found(c):
    make_run(c, "r", RunStatus.DELIVERING)
    for i in range(120):
        make_delivery(c, "r", f"u{i:03d}@example.com", DeliveryStatus.QUEUED)
    assert len(rec.reconcile(c, NOW).deliveries) == 120


def test_more_stalled_runs_than_a_page_are_all_found(c):
    for i in range(rec.PAGE + 5):
        make_run(c, f"r{i:04d}", RunStatus.PENDING)
    assert len(rec.reconcile(c, NOW).runs) == rec.PAGE + 5


def test_stalled_notification_channels_are_sent_again(c):
    make_alert(c, "a-sending", email=ChannelSend(target="x@example.com", status="sending", lease_until=NOW - AFTER * 2))
    make_alert(c, "a-no-lease", slack=ChannelSend(target="#ops", status="sending"))
    make_alert(c, "a-held", email=ChannelSend(target="x@example.com", status="sending", lease_until=NOW - AFTER))
    make_alert(c, "a-pending", email=ChannelSend(target="x@example.com"))  # created long ago, never sent
    make_alert(c, "a-new", created=NOW - AFTER, email=ChannelSend(target="x@example.com"))
    make_alert(c, "a-due", email=ChannelSend(target="x@example.com", next_attempt_at=NOW - AFTER * 2))
    make_alert(c, "a-later", email=ChannelSend(target="x@example.com", next_attempt_at=NOW - AFTER))
    make_alert(
        c,
        "a-mixed",
        email=ChannelSend(target="x@example.com", status="sent", sent_at=LONG_AGO),
        slack=ChannelSend(target="#ops", status="failed"),
        heartbeat=ChannelSend(target=""),
    )
    result = rec.reconcile(c, NOW)
    expected = ["a-due/email", "a-mixed/heartbeat", "a-no-lease/slack", "a-pending/email", "a-sending/email"]
    assert sorted(result.notifications) == expected and result.total == 5
    payloads = sorted((p["alert_id"], p["channel"]) for path, p in queued(c) if path == SEND_NOTIFICATION)
    assert payloads == [tuple(n.split("/")) for n in expected]
    assert len(queued(c)) == 5
    rec.reconcile(c, NOW)
    assert len(c.queue.tasks) == 5  # same period, same names
    rec.reconcile(c, NOW + AFTER)  # the next period: those five again, and three more are overdue by now
    assert len(c.queue.tasks) == 13


def test_a_requeued_notification_is_sent(c):
    make_alert(c, "a1", email=ChannelSend(target="cfo@example.com"))
    rec.reconcile(c, NOW)
    drain(c)
    assert len(c.mailer.sent["cfo@example.com"]) == 1 and c.store.get_alert("a1").sent


def test_a_pass_that_requeued_something_says_what(c, caplog):
    with caplog.at_level(logging.WARNING, logger="herald.services.reconcile"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        assert rec.reconcile(c, NOW).total == 0
    assert caplog.records == []  # nothing stalled: nothing said
    make_run(c, "r", RunStatus.PENDING)
    make_run(c, "t", RunStatus.PENDING, recoveries=3)
    make_run(c, "d", RunStatus.DELIVERING)
    make_delivery(c, "d", "a@example.com", DeliveryStatus.QUEUED)
    make_delivery(c, "d", "b@example.com", DeliveryStatus.QUEUED)
    make_alert(c, "a1", email=ChannelSend(target="x@example.com"))
    with caplog.at_level(logging.WARNING, logger="herald.services.reconcile"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        rec.reconcile(c, NOW)
    (line,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert line.getMessage() == "reconciler re-queued stalled work"
    assert (line.runs, line.deliveries, line.notifications, line.failed) == (1, 2, 1, 1)  # type: ignore[attr-defined]
    (gave_up,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert gave_up.getMessage() == "run given up by the reconciler"
    assert gave_up.run_id == "t" and "3 recoveries" in gave_up.error  # type: ignore[attr-defined]


def test_reconcile_defaults_to_the_clock(c):
    make_run(c, "r", RunStatus.PENDING)
    assert rec.reconcile(c).runs == ["r"]
