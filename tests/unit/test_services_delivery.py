"""services/delivery.py, the answers of a send task and the unknown-outcome paths (README
"Delivery guarantees": at most once; an unknown outcome is never re-sent blindly — with
SendGrid and its webhook key it is reconciled, without it, or on Slack, it stays
``unknown``; transient failures retry at 2, 8 and 32 minutes, then fail and the owner hears)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus, RunStatus
from herald.services import delivery as sending
from herald.services import runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import FINISH_RUN, SEND_DELIVERY
from tests import factories
from tests.drive import drain

A = "a@example.com"
WAIT = 900


def container(tmp_path, recipients=None, **settings):
    c = factories.container(tmp_path, **settings)
    apply_definitions(c, [factories.report(recipients=recipients or {"email": [A]})])
    return c


def start(c, request_id="r"):
    run, _ = runs.start_manual_run(c, "board-pack", request_id=request_id)
    c.queue.take_due(c.clock.now(), "/tasks/runs/execute")
    runs.execute_run(c, run.id)
    c.queue.pending = [t for t in c.queue.pending if t.path != SEND_DELIVERY]  # sends are driven by hand
    return run, c.store.list_deliveries(run_id=run.id).items


def test_a_task_for_an_unknown_delivery_answers_unknown(tmp_path):
    c = container(tmp_path)
    assert sending.send_delivery(c, "nope") == sending.SendOutcome("unknown")


def test_a_delivery_held_by_another_worker_answers_leased_until_its_lease_ends(tmp_path):
    c = container(tmp_path)
    _, (d,) = start(c)
    now = c.clock.now()
    assert c.store.claim_delivery(d.id, now, now + timedelta(seconds=30)) is not None
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("leased", retry_after=31.0)


def test_a_retry_not_due_yet_answers_when_it_is(tmp_path):
    c = container(tmp_path)
    c.mailer.script[A] = [DeliveryError("timeout", permanent=False)]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "retrying"
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("not-due", retry_after=120.0)
    c.clock.advance(minutes=2)  # due exactly now
    assert sending.send_delivery(c, d.id).status == "sent"


def test_a_finished_delivery_answers_done_and_queues_the_runs_finish(tmp_path):
    c = container(tmp_path)
    run, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "sent"
    c.queue.tasks.clear()
    c.queue.pending.clear()
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("done")  # a redelivered task
    assert [t.payload for t in c.queue.tasks.values() if t.path == FINISH_RUN] == [{"run_id": run.id}]
    assert len(c.mailer.sent[A]) == 1


def test_a_crash_between_the_outcome_and_the_look_at_the_run_still_finishes_it(tmp_path):
    # The outcome and the look are two steps (issue 14): the task is settled only after
    # both, so the process dying between them runs the task again, and that finishes the run.
    c = container(tmp_path)
    run, (d,) = start(c)
    store_look = c.store.has_open_deliveries

    def crash(_run_id):
        raise SystemExit("killed after the outcome was written")

    c.store.has_open_deliveries = crash
    with pytest.raises(SystemExit):
        sending.send_delivery(c, d.id)
    assert c.store.get_delivery(d.id).status == DeliveryStatus.SENT
    assert [t for t in c.queue.tasks.values() if t.path == FINISH_RUN] == []
    c.store.has_open_deliveries = store_look
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("done")  # the unsettled task, again
    assert [t.payload for t in c.queue.tasks.values() if t.path == FINISH_RUN] == [{"run_id": run.id}]
    assert len(c.mailer.sent[A]) == 1


def test_a_suppressed_delivery_answers_done_and_lets_the_run_finish(tmp_path):
    c = container(tmp_path)
    from herald.ports.store import Suppression

    c.store.add_suppression(Suppression(A, "board-pack", "unsubscribe", c.clock.now()))
    run, (d,) = start(c)
    assert d.status == DeliveryStatus.SUPPRESSED
    c.queue.tasks.clear()
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("done")
    assert [t.payload for t in c.queue.tasks.values() if t.path == FINISH_RUN] == [{"run_id": run.id}]


def test_an_open_delivery_whose_claim_failed_for_another_reason_answers_done_without_finishing(tmp_path):
    c = container(tmp_path, recipients={"email": [A, "b@example.com"]})
    _, ds = start(c)
    d = ds[0]
    c.store.update_delivery(d.id, status=DeliveryStatus.SENDING, lease_until=None)
    c.queue.tasks.clear()
    assert sending.send_delivery(c, d.id).status in ("sent", "done")
    assert [t for t in c.queue.tasks.values() if t.path == FINISH_RUN] == []  # b is still open


# Unknown outcomes ---------------------------------------------------------------------------
def unknown_error():
    return DeliveryError("read timeout", permanent=False, unknown=True)


def test_without_the_webhook_key_an_unknown_send_stays_unknown_and_is_not_resent(tmp_path):
    c = container(tmp_path, sendgrid_api_key="SG.x")
    c.mailer.script[A] = [unknown_error()]
    run, (d,) = start(c)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("unknown-outcome")
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.UNKNOWN and stored.next_attempt_at is None and stored.lease_until is None
    assert stored.last_error == "outcome unknown, not re-sent: read timeout" and stored.error_kind == "transient"
    assert stored.attempt_log[-1] == {"at": c.clock.now().isoformat(), "result": "unknown", "error": "read timeout"}
    drain(c)
    assert len(c.mailer.attempts[A]) == 1
    assert c.store.get_run(run.id).status == RunStatus.FAILED  # its one recipient did not get it


def test_the_outbox_resends_an_unknown_outcome_on_the_normal_schedule(tmp_path):
    c = container(tmp_path)  # no SendGrid: the outbox writes one file per delivery id
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "retrying"


@pytest.mark.parametrize(
    ("settings", "outcome"),
    [({"slack_bot_token": "xoxb-1"}, "unknown-outcome"), ({"slack_live": True}, "unknown-outcome"), ({}, "retrying")],
)
def test_a_slack_unknown_outcome_is_never_resent_when_slack_is_real(tmp_path, settings, outcome):
    c = container(tmp_path, recipients={"slack": ["C0123"]}, **settings)
    c.chat.script["C0123"] = [unknown_error()]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == outcome


def test_a_lost_attempt_without_a_way_to_confirm_it_is_given_up(tmp_path):
    c = container(tmp_path, sendgrid_api_key="SG.x")
    _, (d,) = start(c)
    now = c.clock.now()
    c.store.claim_delivery(d.id, now, now + c.lease)  # a worker claims it and dies
    c.clock.advance(seconds=c.settings.lease_seconds + 1)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("unknown-outcome")
    stored = c.store.get_delivery(d.id)
    assert stored.last_error == "outcome unknown, not re-sent: the previous attempt left no outcome"
    assert c.mailer.attempts[A] == []


@pytest.fixture
def events_on(tmp_path):
    return container(tmp_path, sendgrid_api_key="SG.x", sendgrid_webhook_public_key="k", reconcile_wait_seconds=WAIT)


def test_with_the_webhook_key_an_unknown_send_waits_for_its_event(events_on):
    c = events_on
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    now = c.clock.now()
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("reconciling")
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.RECONCILING and stored.next_attempt_at == now + timedelta(seconds=WAIT)
    assert stored.last_error == "outcome unknown: read timeout" and stored.attempts == 1
    checks = [t for t in c.queue.tasks.values() if t.path == SEND_DELIVERY and t.eta is not None]
    assert [(t.payload["delivery_id"], t.eta) for t in checks] == [(d.id, now + timedelta(seconds=WAIT))]
    assert checks[0].name not in {sending.send_task(d.id, n).name for n in range(1, 10)}  # never a retry's name
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("not-due", retry_after=float(WAIT))


def test_a_lost_attempt_with_the_webhook_key_is_reconciled_and_the_claim_is_not_counted(events_on):
    c = events_on
    _, (d,) = start(c)
    now = c.clock.now()
    c.store.claim_delivery(d.id, now, now + c.lease)
    c.clock.advance(seconds=c.settings.lease_seconds + 1)
    assert sending.send_delivery(c, d.id).status == "reconciling"
    stored = c.store.get_delivery(d.id)
    assert stored.attempts == 1 and stored.last_error == "outcome unknown: the previous attempt left no outcome"


def test_an_unconfirmed_send_is_resent_once_marked_resent(events_on):
    c = events_on
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    sending.send_delivery(c, d.id)
    c.clock.advance(seconds=WAIT)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.SENT and stored.events["reconciled"] == "resent" and stored.attempts == 2
    assert len(c.mailer.sent[A]) == 1
    assert sending.send_delivery(c, d.id).status == "done"


def test_an_unknown_outcome_with_no_retry_left_fails_and_says_why(tmp_path):
    c = container(
        tmp_path, sendgrid_api_key="SG.x", sendgrid_webhook_public_key="k", reconcile_wait_seconds=WAIT, max_retries=0
    )
    c.mailer.script[A] = [unknown_error()]
    run, (d,) = start(c)
    sending.send_delivery(c, d.id)
    c.clock.advance(seconds=WAIT)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("failed")
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.FAILED and stored.error_kind == "transient"
    assert stored.last_error == "outcome unknown after 1 attempts and no provider event confirmed it"
    assert stored.attempt_log[-1]["result"] == "unknown"
    assert len(c.mailer.attempts[A]) == 1  # not re-sent
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.FAILED  # its one recipient did not get it


def test_a_reconcile_check_that_lost_the_race_does_nothing(events_on):
    c = events_on
    c.mailer.script[A] = [unknown_error()]
    _, (d,) = start(c)
    sending.send_delivery(c, d.id)
    c.clock.advance(seconds=WAIT)
    current = c.store.get_delivery(d.id)
    c.store.update_delivery(d.id, status=DeliveryStatus.SENT)  # an event confirmed it meanwhile
    assert sending._reconcile_timeout(c, current) == sending.SendOutcome("done")
    assert c.mailer.sent[A] == []


def test_a_send_that_raises_unexpectedly_is_transient_with_its_type(tmp_path):
    c = container(tmp_path)

    def boom(message):
        raise KeyError("header")

    c.mailer.send = boom
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "retrying"
    assert c.store.get_delivery(d.id).last_error == "KeyError: 'header'"
