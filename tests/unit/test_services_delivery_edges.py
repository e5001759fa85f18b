"""services/delivery.py edges, from README "Delivery guarantees": a claim is held for
``HERALD_LEASE_SECONDS`` and the outcome is recorded in the write that releases it;
transient failures retry at 2, 8 and 32 minutes, also with SendGrid, then fail and the
owner hears; an unknown outcome is never re-sent blindly (reconciled with the webhook key:
a ``processed`` event confirms it, else it is sent once more; without the key it stays
``unknown``), and a send whose earlier attempt left no outcome counts as unknown; Herald's
``delivery.failed`` event says why and whether retrying could help (services/events.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus, RunStatus
from herald.services import delivery as sending
from herald.services import feedback, resend
from herald.services.tasks import SEND_DELIVERY
from tests.drive import drain
from tests.support.sendgrid_events import event
from tests.unit.test_services_delivery import WAIT, container, start, unknown_error

A = "a@example.com"  # the one recipient of test_services_delivery.container
SENDGRID = {"sendgrid_api_key": "SG.x"}  # nothing can confirm an unknown send
EVENTS_ON = {**SENDGRID, "sendgrid_webhook_public_key": "k", "reconcile_wait_seconds": WAIT}


def during_send(c, action):
    """The provider takes its time over the next send: ``action`` runs while that request is
    in flight (a redelivered task, a webhook batch, the clock moving), then it answers as
    the mailer's script says."""
    original = c.mailer.send
    calls = []

    def send(message):
        calls.append(message)
        if len(calls) == 1:
            action()
        return original(message)

    c.mailer.send = send


def failed_events(c):
    return [e for topic, e, _ in c.events.published if topic == "deliveries" and e["type"] == "delivery.failed"]


def owner_alert(c, run_id):
    (alert,) = [a for a in c.store.list_alerts(limit=50) if a.kind == "delivery_failures" and a.run_id == run_id]
    return alert


# The claim ------------------------------------------------------------------------------
def test_a_task_redelivered_while_its_send_is_in_flight_waits_for_the_lease(tmp_path):
    c = container(tmp_path)
    _, (d,) = start(c)
    answers = []
    during_send(c, lambda: answers.append(sending.send_delivery(c, d.id)))
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    assert answers == [sending.SendOutcome("leased", retry_after=c.settings.lease_seconds + 1)]
    assert len(c.mailer.attempts[A]) == 1 and len(c.mailer.sent[A]) == 1


BUSY = DeliveryError("SendGrid 503: busy", permanent=False)
BAD_ADDRESS = DeliveryError("SendGrid 400: bad address", permanent=True)
TIMED_OUT = {"result": "unknown", "error": "read timeout"}


@pytest.mark.parametrize(
    ("settings", "error", "status", "kind", "entry"),
    [
        ({}, None, DeliveryStatus.SENT, "", {"result": "sent"}),
        ({}, BUSY, DeliveryStatus.RETRYING, "transient", {"result": "transient", "error": BUSY.message}),
        ({}, BAD_ADDRESS, DeliveryStatus.FAILED, "permanent", {"result": "permanent", "error": BAD_ADDRESS.message}),
        (EVENTS_ON, unknown_error(), DeliveryStatus.RECONCILING, "transient", TIMED_OUT),
        (SENDGRID, unknown_error(), DeliveryStatus.UNKNOWN, "transient", TIMED_OUT),
    ],
    ids=["sent", "transient", "permanent", "reconciling", "unknown"],
)
def test_the_outcome_is_recorded_when_the_provider_answers_and_releases_the_claim(
    tmp_path, settings, error, status, kind, entry
):
    c = container(tmp_path, **settings)
    if error is not None:
        c.mailer.script[A] = [error]
    _, (d,) = start(c)
    during_send(c, lambda: c.clock.advance(seconds=25))  # a slow provider: the answer comes 25 s after the claim
    sending.send_delivery(c, d.id)
    stored = c.store.get_delivery(d.id)
    answered = c.clock.now()
    assert (stored.status, stored.error_kind, stored.lease_until) == (status, kind, None)
    assert stored.updated_at == answered
    assert stored.attempt_log[-1] == {"at": answered.isoformat(), **entry}


def test_a_send_after_a_failed_attempt_clears_the_old_error(tmp_path):
    c = container(tmp_path)
    c.mailer.script[A] = [DeliveryError("SendGrid 503: busy", permanent=False)]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "retrying"
    c.clock.advance(minutes=2)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    sent = c.store.get_delivery(d.id)
    assert (sent.status, sent.last_error, sent.error_kind) == (DeliveryStatus.SENT, "", "")


# Retries at 2, 8 and 32 minutes, also with SendGrid ---------------------------------------
@pytest.mark.parametrize("settings", [SENDGRID, EVENTS_ON], ids=["sendgrid", "sendgrid-with-events"])
def test_with_sendgrid_a_transient_failure_retries_at_2_8_32_minutes_then_fails_and_the_owner_hears(tmp_path, settings):
    c = container(tmp_path, **settings)
    c.mailer.script[A] = [DeliveryError("SendGrid 503: busy", permanent=False)] * 4  # known not sent
    run, (d,) = start(c)
    for minutes in (2, 8, 32):
        assert sending.send_delivery(c, d.id) == sending.SendOutcome("retrying")
        waiting = c.store.get_delivery(d.id)
        assert waiting.status == DeliveryStatus.RETRYING
        assert waiting.next_attempt_at == c.clock.now() + timedelta(minutes=minutes)
        c.clock.advance(minutes=minutes)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("failed")
    assert len(c.mailer.attempts[A]) == 4  # 1 + 3 retries
    assert c.store.get_delivery(d.id).last_error == "gave up after 4 attempts: SendGrid 503: busy"
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.FAILED
    assert "gave up after 4 attempts: SendGrid 503: busy" in owner_alert(c, run.id).body


def test_a_long_retry_history_does_not_make_the_next_attempt_look_lost(tmp_path):
    # The attempt log keeps the last 12 entries; past that, the count of outcomes cannot tell a
    # lost attempt, so the next one is sent as usual.
    c = container(tmp_path, **SENDGRID, max_retries=20, retry_delays="60")
    c.mailer.script[A] = [DeliveryError("SendGrid 503: busy", permanent=False)] * 13
    _, (d,) = start(c)
    for _ in range(13):
        assert sending.send_delivery(c, d.id) == sending.SendOutcome("retrying")
        c.clock.advance(seconds=60)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    assert len(c.mailer.attempts[A]) == 14 and len(c.mailer.sent[A]) == 1


# Lost attempts: a claim that recorded no outcome ------------------------------------------
def crash_mid_send(c, d):
    """A worker claims the delivery and dies; the task comes back after the lease."""
    now = c.clock.now()
    assert c.store.claim_delivery(d.id, now, now + c.lease) is not None
    c.clock.advance(seconds=c.settings.lease_seconds + 1)


def test_a_lost_attempt_after_a_failed_one_is_still_not_resent(tmp_path):
    c = container(tmp_path, **SENDGRID)
    c.mailer.script[A] = [DeliveryError("SendGrid 503: busy", permanent=False)]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "retrying"
    c.clock.advance(minutes=2)
    crash_mid_send(c, d)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("unknown-outcome")
    assert len(c.mailer.attempts[A]) == 1  # only the first, failed attempt: the lost one may have gone out


def test_a_lost_attempt_after_a_resend_is_still_not_resent(tmp_path):
    c = container(tmp_path, **SENDGRID)
    c.mailer.script[A] = [DeliveryError("SendGrid 400: mailbox full", permanent=True)]
    run, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "failed"
    c.mailer.script.pop(A)
    drain(c)  # the run settles: its owner hears, and resend-to-failed is offered
    assert resend.resend_failed(c, run.id, "alice").requested == [d.id]
    crash_mid_send(c, d)  # the resend's worker dies mid-send
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("unknown-outcome")
    stored = c.store.get_delivery(d.id)
    assert stored.last_error == "outcome unknown, not re-sent: the previous attempt left no outcome"
    assert len(c.mailer.attempts[A]) == 1


def test_an_unknown_outcome_after_a_retry_schedules_nothing_more(tmp_path):
    c = container(tmp_path, **SENDGRID)
    c.mailer.script[A] = [DeliveryError("SendGrid 503: busy", permanent=False), unknown_error()]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "retrying"
    c.clock.advance(minutes=2)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("unknown-outcome")
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.UNKNOWN and stored.next_attempt_at is None


# A worker whose lease ran out mid-send --------------------------------------------------
def overtaken(c, d, answers):
    """While the send hangs past its lease, the task comes back and another worker takes over."""

    def other_worker():
        c.clock.advance(seconds=c.settings.lease_seconds + 1)
        answers.append(sending.send_delivery(c, d.id))

    during_send(c, other_worker)


def test_a_timeout_that_comes_back_after_another_worker_gave_up_changes_nothing(tmp_path):
    c = container(tmp_path, **SENDGRID)
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    answers = []
    overtaken(c, d, answers)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("done")  # the outcome is the other worker's
    assert answers == [sending.SendOutcome("unknown-outcome")]
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.UNKNOWN
    assert stored.last_error == "outcome unknown, not re-sent: the previous attempt left no outcome"
    assert len(c.mailer.attempts[A]) == 1


def test_a_timeout_that_comes_back_after_another_worker_began_reconciling_leaves_it_to_the_check(tmp_path):
    c = container(tmp_path, **EVENTS_ON)
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    answers = []
    overtaken(c, d, answers)
    sending.send_delivery(c, d.id)
    assert answers == [sending.SendOutcome("reconciling")]
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.RECONCILING
    assert stored.last_error == "outcome unknown: the previous attempt left no outcome"
    checks = [t for t in c.queue.pending if t.path == SEND_DELIVERY]
    assert [t.eta for t in checks] == [stored.next_attempt_at]  # one check, the other worker's
    c.clock.advance(seconds=WAIT)
    drain(c)
    assert c.store.get_delivery(d.id).status == DeliveryStatus.SENT
    assert len(c.mailer.sent[A]) == 1  # sent once more, once


# Provider events that beat the send's own answer ------------------------------------------
def webhook(c, d, kind):
    return lambda: feedback.ingest(c, [event(kind, d, c.clock.now(), message_id="sg-1")])


def test_a_processed_event_before_the_timeout_confirms_the_send_at_once(tmp_path):
    c = container(tmp_path, **EVENTS_ON)
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    during_send(c, webhook(c, d, "processed"))
    sending.send_delivery(c, d.id)
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.SENT and stored.provider_message_id == "sg-1"
    assert stored.events["reconciled"] == "confirmed" and stored.last_error == ""
    c.clock.advance(seconds=WAIT)
    drain(c)
    assert len(c.mailer.attempts[A]) == 1  # confirmed: never sent again


def test_a_delivered_event_before_the_send_answered_moves_it_on(tmp_path):
    c = container(tmp_path, **EVENTS_ON)
    _, (d,) = start(c)
    during_send(c, webhook(c, d, "delivered"))
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    assert c.store.get_delivery(d.id).status == DeliveryStatus.DELIVERED


# Reconcile checks -----------------------------------------------------------------------
def test_with_one_retry_allowed_an_unconfirmed_send_is_still_sent_once_more(tmp_path):
    c = container(tmp_path, **EVENTS_ON, max_retries=1)
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "reconciling"
    c.clock.advance(seconds=WAIT)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    assert c.store.get_delivery(d.id).events["reconciled"] == "resent"
    assert len(c.mailer.sent[A]) == 1


def test_a_resend_that_is_unknown_again_waits_for_its_own_check(tmp_path):
    c = container(tmp_path, **EVENTS_ON)
    c.mailer.script[A] = [unknown_error(), unknown_error()]
    run, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "reconciling"
    c.clock.advance(seconds=WAIT)
    drain(c)  # the first check: sent once more, and unknown again
    again = c.store.get_delivery(d.id)
    assert again.status == DeliveryStatus.RECONCILING and again.attempts == 2
    c.clock.advance(seconds=WAIT)
    drain(c)  # the second check
    assert c.store.get_delivery(d.id).status == DeliveryStatus.SENT
    assert len(c.mailer.attempts[A]) == 3 and len(c.mailer.sent[A]) == 1
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED


def test_the_resend_after_a_check_is_claimed_like_any_send(tmp_path):
    c = container(tmp_path, **EVENTS_ON)
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    sending.send_delivery(c, d.id)
    c.clock.advance(seconds=WAIT)
    seen, answers = [], []

    def redelivered_check():
        seen.append(c.store.get_delivery(d.id))
        answers.append(sending.send_delivery(c, d.id))

    during_send(c, redelivered_check)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    now = c.clock.now()
    (in_flight,) = seen
    assert (in_flight.status, in_flight.attempts) == (DeliveryStatus.SENDING, 2)
    assert (in_flight.lease_until, in_flight.next_attempt_at, in_flight.updated_at) == (now + c.lease, None, now)
    assert answers == [sending.SendOutcome("leased", retry_after=c.settings.lease_seconds + 1)]
    assert len(c.mailer.sent[A]) == 1


# Herald's delivery.failed event ---------------------------------------------------------
def test_a_permanent_failure_is_published_with_its_reason(tmp_path):
    c = container(tmp_path)
    c.mailer.script[A] = [DeliveryError("SendGrid 400: invalid address", permanent=True)]
    run, (d,) = start(c)
    sending.send_delivery(c, d.id)
    (published,) = failed_events(c)
    assert (published["delivery_id"], published["run_id"]) == (d.id, run.id)
    assert (published["error"], published["permanent"], published["attempts"]) == (
        "SendGrid 400: invalid address",
        True,
        1,
    )


def test_an_unexpected_error_past_the_retries_is_published_as_transient(tmp_path):
    c = container(tmp_path, max_retries=0)

    def boom(message):
        raise KeyError("header")

    c.mailer.send = boom
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("failed")
    (published,) = failed_events(c)
    assert published["error"] == "gave up after 1 attempts: KeyError: 'header'"
    assert published["permanent"] is False


def test_an_unconfirmed_send_with_no_retry_left_is_published_as_transient_when_it_fails(tmp_path):
    c = container(tmp_path, **EVENTS_ON, max_retries=0)
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    sending.send_delivery(c, d.id)
    c.clock.advance(seconds=WAIT)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("failed")
    failed = c.store.get_delivery(d.id)
    assert failed.updated_at == c.clock.now()
    (published,) = failed_events(c)
    assert published["error"] == "outcome unknown after 1 attempts and no provider event confirmed it"
    assert published["permanent"] is False
