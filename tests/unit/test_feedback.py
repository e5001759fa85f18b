"""Folding SendGrid events into a delivery (pure), and unknown-send reconciliation under a FakeClock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus, RunStatus
from herald.services import feedback, runs
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.drive import drain
from tests.factories import T0
from tests.support.sendgrid_events import event


def delivery(status=DeliveryStatus.SENT, **fields) -> Delivery:
    return factories.delivery(status, **{"provider_message_id": "msg1", **fields})


def fold(d: Delivery, *events) -> Delivery:
    return d.model_copy(update=feedback.fold_events(d, list(events), T0 + timedelta(days=1)))


def at(seconds: int):
    return T0 + timedelta(seconds=seconds)


def test_bounce_after_delivered_is_bounced():
    d = fold(delivery(), event("delivered", delivery(), at(1)))
    assert d.status == DeliveryStatus.DELIVERED
    d = fold(d, event("bounce", d, at(600), type="bounce", reason="550 gone"))
    assert d.status == DeliveryStatus.BOUNCED and d.events["bounced_at"] == at(600).isoformat()


def test_delivered_never_overwrites_bounced():
    d = fold(delivery(), event("bounce", delivery(), at(5), type="bounce"))
    d = fold(d, event("delivered", d, at(10)))
    assert d.status == DeliveryStatus.BOUNCED
    assert d.events["delivered_at"] == at(10).isoformat()  # the fact is kept; the status is not moved


def test_open_before_delivered_implies_delivered_and_the_earlier_time_wins():
    d = fold(delivery(), event("open", delivery(), at(30), sg_machine_open=False))
    assert d.status == DeliveryStatus.DELIVERED and d.events["delivered_at"] == at(30).isoformat()
    d = fold(d, event("delivered", d, at(2)))  # the late delivered event, with its own earlier time
    assert d.events["delivered_at"] == at(2).isoformat() and d.events["opened_at"] == at(30).isoformat()


def test_machine_opens_are_counted_apart():
    d = fold(
        delivery(),
        event("open", delivery(), at(5), sg_machine_open=True),
        event("open", delivery(), at(6), sg_machine_open=False),
        event("open", delivery(), at(7), sg_machine_open=False),
    )
    assert (d.events["opens_machine"], d.events["opens_human"]) == (1, 2)
    assert d.events["machine_opened_at"] == at(5).isoformat() and d.events["opened_at"] == at(6).isoformat()


def test_clicks_count_without_keeping_the_url():
    d = fold(delivery(), event("click", delivery(), at(5), url="https://h/l/secret-token"))
    assert d.events["clicks"] == 1 and "secret-token" not in str(d.events)


def test_history_is_capped_and_ordered_by_event_time():
    events = [event("open", delivery(), at(100 - i)) for i in range(30)]
    d = fold(delivery(), *events)
    times = [h["at"] for h in d.events["history"]]
    assert len(times) == feedback.HISTORY_CAP and times == sorted(times)
    assert times[-1] == at(100).isoformat() and d.events["opens_human"] == 30


def test_dropped_from_sent_is_dropped_and_deferrals_only_count():
    d = fold(delivery(), event("deferred", delivery(), at(1), response="421 later"))
    assert d.status == DeliveryStatus.SENT and d.events["deferrals"] == 1
    d = fold(d, event("dropped", d, at(2), reason="Bounced Address"))
    assert d.status == DeliveryStatus.DROPPED and d.events["drop_reason"] == "Bounced Address"


@pytest.mark.parametrize("status", [DeliveryStatus.FAILED, DeliveryStatus.SENDING, DeliveryStatus.SUPPRESSED])
def test_statuses_outside_the_feedback_window_only_gain_facts(status):
    d = fold(delivery(status), event("delivered", delivery(), at(1)))
    assert d.status == status and d.events["delivered_at"] == at(1).isoformat()


def test_unknown_is_confirmed_by_processed():
    d = fold(delivery(DeliveryStatus.UNKNOWN, provider_message_id=None), event("processed", delivery(), at(1)))
    assert d.status == DeliveryStatus.SENT and d.events["reconciled"] == "confirmed"
    assert d.provider_message_id == "msg1" and d.delivered_at == at(1)


def test_unknown_waits_on_a_deferral_alone():
    d = fold(delivery(DeliveryStatus.UNKNOWN), event("deferred", delivery(), at(1)))
    assert d.status == DeliveryStatus.UNKNOWN and "reconciled" not in d.events


# Unknown sends: reconcile before resending (decision 5) --------------------------------------
WAIT = 900


@pytest.fixture
def c(tmp_path):
    container = factories.container(
        tmp_path, sendgrid_api_key="SG.test", sendgrid_webhook_public_key="events-on", reconcile_wait_seconds=WAIT
    )
    apply_definitions(container, [factories.report(recipients={"email": ["a@example.com"]})])
    return container


def timed_out(c):
    c.mailer.script["a@example.com"] = [DeliveryError("SendGrid read timeout", permanent=False, unknown=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    (d,) = c.store.list_deliveries(run_id=run.id).items
    return run, d


def test_a_timeout_marks_unknown_and_an_event_confirms_it_without_a_resend(c):
    run, d = timed_out(c)
    assert d.status == DeliveryStatus.RECONCILING and d.next_attempt_at == c.clock.now() + timedelta(seconds=WAIT)
    assert [e["result"] for e in d.attempt_log] == ["unknown"]
    assert c.store.get_run(run.id).status == RunStatus.DELIVERING  # not finished while unknown

    c.clock.advance(seconds=40)
    result = feedback.ingest(c, [event("processed", d, c.clock.now(), message_id="sg-abc")])
    assert result.applied == 1
    confirmed = c.store.get_delivery(d.id)
    assert confirmed.status == DeliveryStatus.SENT and confirmed.events["reconciled"] == "confirmed"
    assert confirmed.provider_message_id == "sg-abc"

    c.clock.advance(seconds=WAIT)
    drain(c)  # the reconcile check finds it confirmed: no resend
    assert len(c.mailer.attempts["a@example.com"]) == 1 and c.mailer.sent["a@example.com"] == []
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED


def test_no_event_within_the_wait_resends_once_and_marks_it(c):
    run, d = timed_out(c)
    c.clock.advance(seconds=WAIT - 1)
    drain(c)
    assert c.store.get_delivery(d.id).status == DeliveryStatus.RECONCILING  # not yet
    c.clock.advance(seconds=1)
    drain(c)
    resent = c.store.get_delivery(d.id)
    assert resent.status == DeliveryStatus.SENT and resent.events["reconciled"] == "resent"
    assert resent.attempts == 2 and [e["result"] for e in resent.attempt_log] == ["unknown", "sent"]
    assert len(c.mailer.sent["a@example.com"]) == 1
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED


def test_a_crash_after_the_claim_is_reconciled_not_resent(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="crash")
    c.queue.take_due(c.clock.now(), "/tasks/runs/execute")
    runs.execute_run(c, run.id)
    (d,) = c.store.list_deliveries(run_id=run.id).items
    # A worker claims it and dies before recording anything: the request may have left.
    assert c.store.claim_delivery(d.id, c.clock.now(), c.clock.now() + c.lease) is not None
    c.queue.pending.clear()
    c.clock.advance(seconds=c.settings.lease_seconds + 1)
    from herald.services import delivery as sending

    assert sending.send_delivery(c, d.id).status == "reconciling"
    waiting = c.store.get_delivery(d.id)
    assert waiting.status == DeliveryStatus.RECONCILING and waiting.attempts == 1
    assert c.mailer.attempts["a@example.com"] == []  # nothing was sent blindly
    c.clock.advance(seconds=WAIT)
    drain(c)
    assert c.store.get_delivery(d.id).events["reconciled"] == "resent"
    assert len(c.mailer.sent["a@example.com"]) == 1


def test_without_sendgrid_an_unknown_outcome_retries_as_before(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(recipients={"email": ["a@example.com"]})])
    _, d = timed_out(c)
    assert d.status == DeliveryStatus.RETRYING
