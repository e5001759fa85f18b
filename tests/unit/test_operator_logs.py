"""Operator log lines are an interface: what each one must say.

Logs are JSON lines on stderr (README "Configuration": ``HERALD_LOG_LEVEL``; herald/logs.py),
read and filtered in Cloud Logging. An operator finds an event by its message, exactly —
``jsonPayload.message = "..."``, as the log-based metric in terraform/modules/herald/monitoring.tf
does — and reads the fields beside it: which report, run, delivery or alert, which attempt,
why (the error, the cause), and what happens next (retrying, waiting, resending, given up).
So each test below asserts, for one event: its severity, its message (the filter key), and
the structured fields a filter or a reader needs, as ``JsonFormatter`` writes them. Nothing
else about the wording is pinned.

Promises the lines stand for: README "Delivery guarantees" (at most once, never silently not
at all; an unknown outcome is never re-sent blindly; unexpected errors are logged once with
their context) and "Monitoring" (incidents opened and closed; heartbeats).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.ids import heartbeat_id
from herald.domain.states import DeliveryStatus
from herald.logs import JsonFormatter
from herald.ports.clock import FakeClock
from herald.services import alerts, feedback, incidents, links, runs
from herald.services import delivery as sending
from herald.services import notifications as notify
from herald.services import resend as rs
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.drive import drain
from tests.fakes import StaticSource
from tests.unit import test_services_delivery as deliveries
from tests.unit import test_services_resend as resends
from tests.unit.test_services_notifications import alert as owner_alert
from tests.unit.test_services_runs import CrashingSource, OverlappingSource

A = deliveries.A
WAIT = deliveries.WAIT


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every INFO-and-above line of Herald's services (an earlier test may have set a level)."""
    caplog.set_level(logging.INFO, logger="herald")
    caplog.clear()
    return caplog


def found(caplog: pytest.LogCaptureFixture, module: str, message: str) -> list[logging.LogRecord]:
    """The lines an operator's filter ``jsonPayload.message = "<message>"`` finds."""
    name = f"herald.services.{module}"
    return [r for r in caplog.records if r.name == name and r.getMessage() == message]


def line(caplog: pytest.LogCaptureFixture, module: str, message: str, level: int) -> dict[str, Any]:
    """The one line with ``message``, at ``level``, as Cloud Logging receives it."""
    records = found(caplog, module, message)
    seen = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert len(records) == 1, f"expected one {message!r} from {module}, got: {seen}"
    (record,) = records
    assert record.levelno == level
    entry = json.loads(JsonFormatter().format(record))
    assert entry["severity"] == logging.getLevelName(level) and entry["message"] == message
    return entry


def fields(entry: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: entry.get(name, "<missing>") for name in names}


# services/delivery.py ---------------------------------------------------------------------
# The send path: what became of each attempt of each delivery, and what happens next.


def test_a_sent_delivery_names_its_delivery_run_channel_and_attempt(tmp_path, logs):
    c = deliveries.container(tmp_path)
    run, (d,) = deliveries.start(c)
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "sent"
    sent = line(logs, "delivery", "delivery sent", logging.INFO)
    assert fields(sent, "delivery_id", "run_id", "channel", "attempt") == {
        "delivery_id": d.id,
        "run_id": run.id,
        "channel": "email",
        "attempt": 1,
    }


def test_a_slack_delivery_sent_says_slack(tmp_path, logs):
    c = deliveries.container(tmp_path, recipients={"slack": ["C0123"]})
    _, (d,) = deliveries.start(c)
    logs.clear()
    sending.send_delivery(c, d.id)
    assert line(logs, "delivery", "delivery sent", logging.INFO)["channel"] == "slack"


def test_a_transient_failure_says_which_attempt_failed_why_and_the_retry_then_sends(tmp_path, logs):
    c = deliveries.container(tmp_path)
    c.mailer.script[A] = [DeliveryError("timeout", permanent=False)]
    run, (d,) = deliveries.start(c)
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "retrying"
    failed = line(logs, "delivery", "delivery attempt failed", logging.WARNING)
    assert fields(failed, "delivery_id", "run_id", "attempt", "kind", "error") == {
        "delivery_id": d.id,
        "run_id": run.id,
        "attempt": 1,
        "kind": "transient",  # transient: it will be retried
        "error": "timeout",
    }
    assert found(logs, "delivery", "delivery sent") == []
    logs.clear()
    c.clock.advance(minutes=2)  # the first retry is due
    assert sending.send_delivery(c, d.id).status == "sent"
    assert fields(line(logs, "delivery", "delivery sent", logging.INFO), "delivery_id", "attempt") == {
        "delivery_id": d.id,
        "attempt": 2,
    }


def test_a_permanent_failure_says_permanent_and_why(tmp_path, logs):
    c = deliveries.container(tmp_path)
    c.mailer.script[A] = [DeliveryError("550 no such user", permanent=True)]
    run, (d,) = deliveries.start(c)
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "failed"
    failed = line(logs, "delivery", "delivery attempt failed", logging.WARNING)
    assert fields(failed, "delivery_id", "run_id", "attempt", "kind", "error") == {
        "delivery_id": d.id,
        "run_id": run.id,
        "attempt": 1,
        "kind": "permanent",  # no retry: the delivery failed and the owner hears
        "error": "550 no such user",
    }


def test_an_unexpected_send_error_is_logged_once_with_its_context_and_traceback(tmp_path, logs):
    c = deliveries.container(tmp_path)

    def boom(message):
        raise KeyError("header")

    c.mailer.send = boom
    run, (d,) = deliveries.start(c)
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "retrying"
    raised = line(logs, "delivery", "send raised an unexpected error", logging.ERROR)
    assert fields(raised, "delivery_id", "run_id", "attempt") == {"delivery_id": d.id, "run_id": run.id, "attempt": 1}
    assert "KeyError: 'header'" in raised["exception"]  # the cause, with its traceback
    failed = line(logs, "delivery", "delivery attempt failed", logging.WARNING)  # then retried as transient
    assert fields(failed, "delivery_id", "attempt", "kind", "error") == {
        "delivery_id": d.id,
        "attempt": 1,
        "kind": "transient",
        "error": "KeyError: 'header'",
    }


def test_an_unconfirmable_unknown_outcome_says_it_is_not_resent_and_why(tmp_path, logs):
    c = deliveries.container(tmp_path, sendgrid_api_key="SG.x")  # no webhook key: nothing can confirm it
    c.mailer.script[A] = [deliveries.unknown_error()]
    run, (d,) = deliveries.start(c)
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "unknown-outcome"
    given_up = line(logs, "delivery", "delivery outcome unknown and unconfirmable: not re-sent", logging.WARNING)
    assert fields(given_up, "delivery_id", "run_id", "error") == {
        "delivery_id": d.id,
        "run_id": run.id,
        "error": "read timeout",
    }


def test_a_lost_attempt_given_up_says_the_previous_attempt_left_no_outcome(tmp_path, logs):
    c = deliveries.container(tmp_path, sendgrid_api_key="SG.x")
    run, (d,) = deliveries.start(c)
    now = c.clock.now()
    c.store.claim_delivery(d.id, now, now + c.lease)  # a worker claims it and dies
    c.clock.advance(seconds=c.settings.lease_seconds + 1)
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "unknown-outcome"
    given_up = line(logs, "delivery", "delivery outcome unknown and unconfirmable: not re-sent", logging.WARNING)
    assert fields(given_up, "delivery_id", "run_id", "error") == {
        "delivery_id": d.id,
        "run_id": run.id,
        "error": "the previous attempt left no outcome",
    }


def test_an_unknown_outcome_waits_for_its_event_then_says_it_resends(tmp_path, logs):
    c = deliveries.container(
        tmp_path, sendgrid_api_key="SG.x", sendgrid_webhook_public_key="k", reconcile_wait_seconds=WAIT
    )
    c.mailer.script[A] = [deliveries.unknown_error()]
    _, (d,) = deliveries.start(c)
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "reconciling"
    waiting = line(logs, "delivery", "delivery outcome unknown", logging.WARNING)
    assert fields(waiting, "delivery_id", "attempt", "error") == {
        "delivery_id": d.id,
        "attempt": 1,
        "error": "read timeout",
    }
    logs.clear()
    c.clock.advance(seconds=WAIT)  # no provider event confirmed it
    assert sending.send_delivery(c, d.id).status == "sent"
    resending = line(logs, "delivery", "unknown send not confirmed: resending", logging.WARNING)
    assert fields(resending, "delivery_id", "attempt") == {"delivery_id": d.id, "attempt": 2}
    assert fields(line(logs, "delivery", "delivery sent", logging.INFO), "delivery_id", "attempt") == {
        "delivery_id": d.id,
        "attempt": 2,
    }


def test_a_send_whose_lease_ran_out_and_was_taken_over_says_the_lease_was_lost(tmp_path, logs):
    c = deliveries.container(tmp_path)  # the outbox: a second send is harmless
    _, (d,) = deliveries.start(c)
    send = c.mailer.send

    def slow(message):
        c.mailer.send = send
        c.clock.advance(seconds=c.settings.lease_seconds + 1)  # our lease runs out mid-send
        assert sending.send_delivery(c, d.id).status == "sent"  # another worker takes over and sends
        return send(message)

    c.mailer.send = slow
    logs.clear()
    assert sending.send_delivery(c, d.id).status == "sent"
    lost = line(logs, "delivery", "lease lost during send", logging.WARNING)
    assert lost["delivery_id"] == d.id


# services/runs.py -------------------------------------------------------------------------
# A run's life: created (or repeated), rendered (or failed, or queued behind), fanned out, finished.


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, FakeClock(datetime(2026, 11, 2, 7, 0, tzinfo=UTC)))
    apply_definitions(container, [factories.report()])
    return container


def test_a_run_created_and_a_repeated_request_are_told_apart(c, logs):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="key-1")
    created = line(logs, "runs", "run created", logging.INFO)
    assert fields(created, "run_id", "report_id", "trigger") == {
        "run_id": run.id,
        "report_id": "board-pack",
        "trigger": "manual",
    }
    logs.clear()
    runs.start_manual_run(c, "board-pack", request_id="key-1")
    again = line(logs, "runs", "run exists already", logging.INFO)
    assert fields(again, "run_id", "report_id") == {"run_id": run.id, "report_id": "board-pack"}
    assert found(logs, "runs", "run created") == []


def test_a_fan_out_counts_its_deliveries_and_send_tasks(c, logs):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    logs.clear()
    runs.execute_run(c, run.id)
    fanned = line(logs, "runs", "fan-out", logging.INFO)
    assert fields(fanned, "run_id", "deliveries", "new", "tasks") == {
        "run_id": run.id,
        "deliveries": 2,  # a@ and b@
        "new": 2,
        "tasks": 2,
    }


def test_a_failed_render_says_which_run_and_why(c, logs):
    c.source = StaticSource(fail="the warehouse said no")
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    logs.clear()
    runs.execute_run(c, run.id)
    failed = line(logs, "runs", "render failed", logging.ERROR)
    assert fields(failed, "run_id", "report_id", "error") == {
        "run_id": run.id,
        "report_id": "board-pack",
        "error": "the warehouse said no",
    }


def test_a_render_that_raises_is_logged_with_its_attempt_and_traceback(c, logs):
    c.source = CrashingSource()
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    logs.clear()
    runs.execute_run(c, run.id)
    crashed = line(logs, "runs", "render raised an unexpected error", logging.ERROR)
    assert fields(crashed, "run_id", "report_id", "attempt") == {
        "run_id": run.id,
        "report_id": "board-pack",
        "attempt": 1,
    }
    assert "RuntimeError: source down" in crashed["exception"]


def test_a_run_queued_behind_the_previous_render_names_that_run(c, logs):
    first, _ = runs.start_manual_run(c, "board-pack", request_id="first")
    second, _ = runs.start_manual_run(c, "board-pack", request_id="second")
    c.source = OverlappingSource(c, second.id)  # overlap: queue (the default)
    logs.clear()
    runs.execute_run(c, first.id)
    queued = line(logs, "runs", "render queued behind the report's previous run", logging.INFO)
    assert fields(queued, "run_id", "previous") == {"run_id": second.id, "previous": first.id}


@pytest.mark.parametrize(("failing", "status"), [((), "succeeded"), ((A,), "partial")])
def test_a_finished_run_says_its_outcome(c, logs, failing, status):
    for address in failing:
        c.mailer.script[address] = [DeliveryError("550 no such user", permanent=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    logs.clear()
    drain(c)
    finished = line(logs, "runs", "run finished", logging.INFO)
    assert fields(finished, "run_id", "report_id", "status") == {
        "run_id": run.id,
        "report_id": "board-pack",
        "status": status,
    }
    assert found(logs, "runs", "test run finished") == []


def test_a_test_run_finished_is_its_own_line(c, logs):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r", test_to="me@example.com")
    logs.clear()
    drain(c)
    finished = line(logs, "runs", "test run finished", logging.INFO)
    assert fields(finished, "run_id", "report_id", "status") == {
        "run_id": run.id,
        "report_id": "board-pack",
        "status": "succeeded",
    }
    assert found(logs, "runs", "run finished") == []  # never counted as the report's own run


# services/resend.py -----------------------------------------------------------------------
# Who asked to resend which run's failures, and whether it was a repeat.


def test_a_resend_names_the_run_the_request_who_asked_and_how_many(tmp_path, logs):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(recipients={"email": [resends.A, resends.B, resends.C]})])
    run = resends.finished_run(c, failing=(resends.A, resends.B))
    logs.clear()
    first = rs.resend_failed(c, run.id, "alice")
    asked = line(logs, "resend", "resend to failed recipients", logging.INFO)
    assert fields(asked, "run_id", "request_id", "actor", "deliveries") == {
        "run_id": run.id,
        "request_id": first.request_id,
        "actor": "alice",
        "deliveries": 2,
    }
    logs.clear()
    for delivery_id in first.requested:  # as they stood when both asked
        c.store.update_delivery(delivery_id, status=DeliveryStatus.FAILED)
    again = rs.resend_failed(c, run.id, "bob")
    assert again.repeated
    repeated = line(logs, "resend", "resend repeated", logging.INFO)
    assert fields(repeated, "run_id", "request_id", "actor") == {
        "run_id": run.id,
        "request_id": first.request_id,
        "actor": "bob",  # who asked again
    }
    assert found(logs, "resend", "resend to failed recipients") == []


# services/notifications.py ----------------------------------------------------------------
# Herald's own messages: queued, sent (or lost, or raised), per alert and channel.
OWNER = "cfo@example.com"


@pytest.fixture
def nc(tmp_path):
    container = factories.container(tmp_path, FakeClock(factories.T0))
    apply_definitions(container, [factories.report(heartbeat_url="https://hc.example/ping/abc")])
    return container


def test_a_queued_notification_names_its_alert_kind_and_channels(nc, logs):
    owner_alert(nc)
    queued = line(logs, "notifications", "notification queued", logging.INFO)
    assert fields(queued, "alert_id", "kind", "channels") == {
        "alert_id": "a1",
        "kind": "run_failed",
        "channels": ["email"],
    }


def test_an_alert_sent_is_a_warning_naming_its_alert_channel_and_attempt(nc, logs):
    owner_alert(nc)
    logs.clear()
    assert notify.send_notification(nc, "a1", "email").status == "sent"
    sent = line(logs, "notifications", "notification sent", logging.WARNING)  # someone was told of a problem
    assert fields(sent, "alert_id", "kind", "channel", "attempt") == {
        "alert_id": "a1",
        "kind": "run_failed",
        "channel": "email",
        "attempt": 1,
    }


def test_a_heartbeat_ping_sent_is_routine_info(nc, logs):
    alerts.heartbeat(nc, state="success", run=None, report_id="board-pack", message="ok", rid="r9")
    ping = heartbeat_id("success", "r9")
    logs.clear()
    assert notify.send_notification(nc, ping, "heartbeat").status == "sent"
    sent = line(logs, "notifications", "notification sent", logging.INFO)
    assert fields(sent, "alert_id", "kind", "channel", "attempt") == {
        "alert_id": ping,
        "kind": "heartbeat",
        "channel": "heartbeat",
        "attempt": 1,
    }


def test_a_notification_send_that_raises_names_its_alert_and_channel_with_the_traceback(nc, logs):
    def boom(message):
        raise RuntimeError("socket closed")

    nc.mailer.send = boom
    owner_alert(nc)
    logs.clear()
    assert notify.send_notification(nc, "a1", "email").status == "retrying"
    raised = line(logs, "notifications", "notification send raised", logging.ERROR)
    assert fields(raised, "alert_id", "channel") == {"alert_id": "a1", "channel": "email"}
    assert "RuntimeError: socket closed" in raised["exception"]


def test_a_notification_whose_lease_was_taken_over_mid_send_says_so(nc, logs):
    owner_alert(nc)
    send = nc.mailer.send

    def slow(message):
        nc.mailer.send = send
        nc.clock.advance(seconds=nc.settings.lease_seconds + 1)  # our lease runs out mid-send
        assert notify.send_notification(nc, "a1", "email").status == "sent"  # another worker takes over
        return send(message)

    nc.mailer.send = slow
    logs.clear()
    assert notify.send_notification(nc, "a1", "email").status == "sent"
    lost = line(logs, "notifications", "notification lease lost during send", logging.WARNING)
    assert fields(lost, "alert_id", "channel") == {"alert_id": "a1", "channel": "email"}


def test_a_permanent_notification_failure_says_permanent(nc, logs):
    nc.mailer.script[OWNER] = [DeliveryError("550 no such user", permanent=True)]
    owner_alert(nc)
    logs.clear()
    notify.send_notification(nc, "a1", "email")
    failed = line(logs, "notifications", "notification attempt failed", logging.WARNING)
    assert fields(failed, "alert_id", "kind", "channel", "attempt", "permanent", "error") == {
        "alert_id": "a1",
        "kind": "run_failed",
        "channel": "email",
        "attempt": 1,
        "permanent": True,
        "error": "550 no such user",
    }


# services/incidents.py --------------------------------------------------------------------
# Watchdog incidents: one line when one opens, one when it closes (README "Monitoring").
SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def late(minutes=0):
    key = (SLOT + timedelta(minutes=minutes)).isoformat()
    return incidents.Finding(
        report=factories.report(), cause="late", key=key, state="not started", subject="Late: x", body="b"
    )


def test_an_incident_opened_names_its_alert_report_and_cause_once(tmp_path, logs):
    c = factories.container(tmp_path, FakeClock(SLOT))
    assert incidents.record(c, late(0), SLOT) == incidents.NEW
    opened = incidents.open_incident(c, factories.report(), "late")
    assert opened is not None
    entry = line(logs, "incidents", "watchdog incident opened", logging.WARNING)
    assert fields(entry, "alert_id", "report_id", "cause") == {
        "alert_id": opened.id,
        "report_id": "board-pack",
        "cause": "late",
    }
    logs.clear()
    assert incidents.record(c, late(1), SLOT + timedelta(minutes=1)) == incidents.UPDATED
    assert found(logs, "incidents", "watchdog incident opened") == []  # joined, not opened again


def test_an_incident_closed_names_its_alert_and_cause(tmp_path, logs):
    c = factories.container(tmp_path, FakeClock(SLOT))
    incidents.record(c, late(0), SLOT)
    opened = incidents.open_incident(c, factories.report(), "late")
    logs.clear()
    assert incidents.close(c, factories.report(), "late", "07:02 succeeded", SLOT + timedelta(minutes=5))
    closed = line(logs, "incidents", "watchdog incident closed", logging.INFO)
    assert fields(closed, "alert_id", "cause") == {"alert_id": opened.id, "cause": "late"}


# services/links.py ------------------------------------------------------------------------
# A recipient's link renewed, a recipient unsubscribed.


@pytest.fixture
def delivered(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    return c.store.list_deliveries(run_id=run.id, recipient=A).items[0]


def test_a_fresh_link_names_the_old_delivery_the_new_one_and_the_run(c, delivered, logs):
    c.clock.set(links.link_expires(c, delivered) + timedelta(seconds=1))
    logs.clear()
    renewal = links.renew(c, delivered)
    assert renewal.status == "sent"
    entry = line(logs, "links", "fresh link requested", logging.INFO)
    assert fields(entry, "delivery_id", "renewal", "run_id") == {
        "delivery_id": delivered.id,
        "renewal": renewal.delivery_id,
        "run_id": delivered.run_id,
    }


def test_an_unsubscribe_names_the_delivery_the_report_and_whether_it_is_new(c, delivered, logs):
    logs.clear()
    links.unsubscribe(c, delivered)
    first = line(logs, "links", "recipient unsubscribed", logging.INFO)
    assert fields(first, "delivery_id", "report_id", "new") == {
        "delivery_id": delivered.id,
        "report_id": "board-pack",
        "new": True,
    }
    logs.clear()
    links.unsubscribe(c, delivered)
    assert line(logs, "links", "recipient unsubscribed", logging.INFO)["new"] is False  # a repeat


# services/feedback.py ---------------------------------------------------------------------
# One line per SendGrid webhook batch: what it held and what became of it.


def test_a_webhook_batch_is_counted_in_one_line(c, delivered, logs):
    def event(kind, event_id):
        return {"event": kind, "timestamp": 1762068600, "delivery_id": delivered.id, "sg_event_id": event_id}

    logs.clear()
    feedback.ingest(c, [event("delivered", "e1"), event("delivered", "e1"), event("something_new", "e2")])
    entry = line(logs, "feedback", "sendgrid events", logging.INFO)
    assert fields(entry, "received", "applied", "duplicates", "deliveries", "ignored", "unknown_types") == {
        "received": 3,
        "applied": 1,
        "duplicates": 1,
        "deliveries": 1,
        "ignored": 1,
        "unknown_types": {"something_new": 1},  # a new event type SendGrid sends: worth a look
    }
