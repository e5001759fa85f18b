"""services/resend.py edges, from its module docstring and README "Routes"
(``POST /api/runs/<id>/resend-failed``: one new attempt for each failed delivery of the run;
200 when the same request was already made): exactly that run's failures move, each with a
task of its own (a second resend of a delivery that failed again is sent too); a repeat
answers for the same run with what the first request did; a delivery another request moved
first is theirs, the others still go; a resend whose task was lost is queued again, and
only such a one: not one in flight, not one never resent, not another run's."""

from __future__ import annotations

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus
from herald.services import delivery as sending
from herald.services import resend as rs
from herald.services import runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import EXECUTE_RUN, SEND_DELIVERY
from tests import factories
from tests.drive import drain
from tests.unit import test_services_resend as base
from tests.unit.test_services_resend import A, B, C, finished_run

c = base.c  # the embedded container with board-pack sent to A, B and C


def queued_sends(c):
    """Delivery ids of the send tasks waiting in the queue."""
    return [t.payload["delivery_id"] for t in c.queue.pending if t.path == SEND_DELIVERY]


def lose_the_queue(c):
    """The deliveries' queued writes committed; the tasks never reached the queue."""
    c.queue.tasks.clear()
    c.queue.pending.clear()


def delivery_of(c, run_id, recipient):
    return c.store.list_deliveries(run_id=run_id, recipient=recipient).items[0]


# The request and its answer -------------------------------------------------------------
def test_the_request_is_kept_with_its_run_who_asked_when_and_what(c):
    run = finished_run(c, failing=(A, B))
    c.clock.advance(hours=1)
    result = rs.resend_failed(c, run.id, "alice")
    assert c.store.get_inbound_event(rs.KIND, result.request_id) == {
        "run_id": run.id,
        "actor": "alice",
        "at": c.clock.now().isoformat(),
        "deliveries": result.requested,
    }


def test_a_repeated_request_answers_for_the_same_run(c):
    run = finished_run(c)
    first = rs.resend_failed(c, run.id, "alice")
    c.store.update_delivery(first.requested[0], status=DeliveryStatus.FAILED)  # as it stood when both asked
    again = rs.resend_failed(c, run.id, "bob")
    assert again.repeated and again.run_id == run.id and again.to_doc()["run_id"] == run.id


def test_a_resent_delivery_records_when_it_was_queued(c):
    run = finished_run(c)
    c.clock.advance(hours=5)
    (d_id,) = rs.resend_failed(c, run.id, "alice").requested
    assert c.store.get_delivery(d_id).updated_at == c.clock.now()


def test_a_delivery_another_request_moved_first_does_not_stop_the_others(c, monkeypatch):
    run = finished_run(c, failing=(A, B, C))
    first, *others = rs.failed_deliveries(c, run.id)  # the order the request walks them in
    record = c.store.put_inbound_event

    def racing(kind, event_id, doc, now):
        claimed = record(kind, event_id, doc, now)
        c.store.transition_delivery(first.id, [DeliveryStatus.FAILED], DeliveryStatus.QUEUED)  # theirs now
        return claimed

    monkeypatch.setattr(c.store, "put_inbound_event", racing)
    result = rs.resend_failed(c, run.id, "alice")
    assert result.requested == [d.id for d in others]
    assert sorted(queued_sends(c)) == sorted(d.id for d in others)


def test_a_delivery_that_fails_again_can_be_resent_again_and_is_sent(c):
    run = finished_run(c)
    rs.resend_failed(c, run.id, "alice")
    c.mailer.script[A] = [DeliveryError("550 still no", permanent=True)]
    drain(c)
    c.mailer.script.pop(A)
    assert delivery_of(c, run.id, A).status == DeliveryStatus.FAILED
    (d_id,) = rs.resend_failed(c, run.id, "alice").requested
    drain(c)
    assert c.store.get_delivery(d_id).status == DeliveryStatus.SENT
    assert len(c.mailer.attempts[A]) == 3 and len(c.mailer.sent[A]) == 1


# Stranded resends: queued with no task ----------------------------------------------------
def test_only_this_runs_stranded_resends_are_queued_again(c):
    other = finished_run(c, request_id="other")
    rs.resend_failed(c, other.id, "alice")
    lose_the_queue(c)  # the other run's resend is stranded too
    run = finished_run(c, request_id="mine")
    result = rs.resend_failed(c, run.id, "alice")
    assert queued_sends(c) == result.requested == [delivery_of(c, run.id, A).id]


def test_a_resend_in_flight_is_not_queued_again(c):
    run = finished_run(c)
    (d_id,) = rs.resend_failed(c, run.id, "alice").requested
    now = c.clock.now()
    assert [t.payload["delivery_id"] for t in c.queue.take_due(now, SEND_DELIVERY)] == [d_id]  # a worker took it
    assert c.store.claim_delivery(d_id, now, now + c.lease) is not None  # and is sending it
    assert rs.resend_failed(c, run.id, "bob").requested == []
    assert queued_sends(c) == []


def test_a_first_attempt_still_waiting_is_not_taken_for_a_stranded_resend(c):
    c.mailer.script[A] = [DeliveryError("550 no such user", permanent=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c, path=EXECUTE_RUN)  # rendered and fanned out: three sends queued
    d_a = delivery_of(c, run.id, A)
    assert sending.send_delivery(c, d_a.id).status == "failed"  # B and C not attempted yet
    waiting = sorted(queued_sends(c))
    assert rs.resend_failed(c, run.id, "alice").requested == [d_a.id]
    assert sorted(queued_sends(c)) == sorted([*waiting, d_a.id])  # no second task for B or C


def test_a_stranded_resend_after_several_attempts_is_queued_again(tmp_path):
    c = factories.container(tmp_path, max_retries=1, retry_delays="60")
    apply_definitions(c, [factories.report(recipients={"email": [A]})])
    c.mailer.script[A] = [DeliveryError("SendGrid 503: busy", permanent=False)] * 2
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    c.clock.advance(seconds=60)
    drain(c)  # the retry failed too: gave up after 2 attempts
    d = delivery_of(c, run.id, A)
    assert d.status == DeliveryStatus.FAILED and len(d.attempt_log) == 2
    rs.resend_failed(c, run.id, "alice")
    queued = c.store.get_delivery(d.id)
    assert (queued.status, queued.next_attempt_at, queued.lease_until) == (DeliveryStatus.QUEUED, None, None)  # due now
    lose_the_queue(c)
    rs.resend_failed(c, run.id, "alice")
    assert queued_sends(c) == [d.id]
    drain(c)
    assert len(c.mailer.sent[A]) == 1


def test_every_stranded_resend_of_a_large_run_is_queued_again(tmp_path):
    c = factories.container(tmp_path)
    everyone = factories.recipients(150)
    apply_definitions(c, [factories.report(recipients={"email": everyone})])
    for address in everyone:
        c.mailer.script[address] = [DeliveryError("550 no such user", permanent=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    c.mailer.script.clear()
    assert len(rs.resend_failed(c, run.id, "alice").requested) == len(everyone)
    lose_the_queue(c)
    rs.resend_failed(c, run.id, "alice")
    assert len(set(queued_sends(c))) == len(everyone)
