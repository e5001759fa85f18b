"""services/resend.py without the web layer (README "Routes": ``POST /api/runs/<id>/resend-failed``:
one new attempt for each failed delivery of the run; 202 queued, 200 same request already
made, 404, 409 run still settling; "Delivery guarantees": an ``unknown`` delivery is offered
here and nowhere else)."""

from __future__ import annotations

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus, RunStatus
from herald.services import resend as rs
from herald.services import runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import SEND_DELIVERY
from tests import factories
from tests.drive import drain

A, B, C = "a@example.com", "b@example.com", "c@example.com"


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path)
    apply_definitions(container, [factories.report(recipients={"email": [A, B, C]})])
    return container


def finished_run(c, failing=(A,), request_id="r"):
    for address in failing:
        c.mailer.script[address] = [DeliveryError("550 no such user", permanent=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id=request_id)
    drain(c)
    for address in failing:
        c.mailer.script.pop(address)
    return run


def test_an_unknown_run_is_404(c):
    with pytest.raises(rs.ResendRefused) as info:
        rs.resend_failed(c, "nope", "alice")
    assert (info.value.status, info.value.message, str(info.value)) == (404, "no such run", "no such run")


def test_a_run_not_delivering_yet_is_409(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")  # pending: nothing rendered
    with pytest.raises(rs.ResendRefused) as info:
        rs.resend_failed(c, run.id, "alice")
    assert (info.value.status, info.value.message) == (409, "the run is pending: it has no failed deliveries yet")


def test_a_delivering_run_with_nothing_open_is_settling(c):
    run = finished_run(c)
    c.store.update_run(run.id, status=RunStatus.DELIVERING)  # its finish is queued, not yet run
    with pytest.raises(rs.ResendRefused) as info:
        rs.resend_failed(c, run.id, "alice")
    assert (info.value.status, info.value.message) == (409, "the run is settling; try again in a moment")


def test_a_delivering_run_with_open_deliveries_can_be_resent(c):
    run = finished_run(c)
    c.store.update_run(run.id, status=RunStatus.DELIVERING)
    d_b = c.store.list_deliveries(run_id=run.id, recipient=B).items[0]
    c.store.update_delivery(d_b.id, status=DeliveryStatus.RETRYING)
    assert len(rs.resend_failed(c, run.id, "alice").requested) == 1


def test_exactly_the_failed_deliveries_get_one_new_attempt(c):
    run = finished_run(c, failing=(A, B))
    assert c.store.get_run(run.id).status == RunStatus.PARTIAL
    result = rs.resend_failed(c, run.id, "alice")
    failed = {d.recipient: d for d in c.store.list_deliveries(run_id=run.id).items}
    assert sorted(result.requested) == sorted([failed[A].id, failed[B].id])
    assert result.to_doc() == {
        "run_id": run.id,
        "request_id": result.request_id,
        "actor": "alice",
        "deliveries": result.requested,
        "count": 2,
        "repeated": False,
    }
    assert result.request_id.startswith("rs") and len(result.request_id) == 26
    for address in (A, B):
        d = failed[address]
        assert d.status == DeliveryStatus.QUEUED and d.next_attempt_at is None and d.lease_until is None
        assert d.attempt_log[-1] == {
            "at": c.clock.now().isoformat(),
            "result": "resend",
            "by": "alice",
            "request": result.request_id,
        }
    assert failed[C].status == DeliveryStatus.SENT
    drain(c)
    assert len(c.mailer.sent[A]) == 1 and len(c.mailer.sent[B]) == 1 and len(c.mailer.sent[C]) == 1
    assert c.store.get_run(run.id).status == RunStatus.PARTIAL  # the run's record stays; the deliveries moved


def test_who_asked_is_kept_up_to_200_characters(c):
    run = finished_run(c)
    asker = "a" * 150 + "@" + "b" * 149  # 300 characters
    result = rs.resend_failed(c, run.id, asker)
    assert result.actor == asker[:200] and len(result.actor) == 200
    assert c.store.get_inbound_event(rs.KIND, result.request_id)["actor"] == asker[:200]
    (delivery,) = [c.store.get_delivery(d) for d in result.requested]
    assert delivery.attempt_log[-1]["by"] == asker[:200]


def test_the_same_request_again_is_repeated_and_sends_nothing(c):
    run = finished_run(c)
    first = rs.resend_failed(c, run.id, "alice")
    c.queue.pending.clear()  # the queue has it; what matters is what a repeat adds
    c.store.update_delivery(first.requested[0], status=DeliveryStatus.FAILED)  # as it stood when both asked
    again = rs.resend_failed(c, run.id, "bob")
    assert again.repeated and again.actor == "alice" and again.requested == first.requested
    assert again.request_id == first.request_id and again.to_doc()["count"] == 1
    assert c.queue.pending == []


def test_a_repeat_whose_first_request_vanished_answers_for_itself_and_sends_nothing(c, monkeypatch):
    run = finished_run(c)
    queued = len(c.queue.tasks)
    monkeypatch.setattr(c.store, "put_inbound_event", lambda *a, **k: False)  # the same request was made...
    monkeypatch.setattr(c.store, "get_inbound_event", lambda kind, rid: None)  # ...and pruned since
    again = rs.resend_failed(c, run.id, "bob")
    assert again.repeated and again.actor == "bob" and again.requested == []
    assert len(c.queue.tasks) == queued  # nothing queued again


def test_a_later_failure_is_a_new_request(c):
    run = finished_run(c)
    first = rs.resend_failed(c, run.id, "alice")
    c.mailer.script[A] = [DeliveryError("550 still no", permanent=True)]
    drain(c)
    second = rs.resend_failed(c, run.id, "alice")
    assert second.request_id != first.request_id and not second.repeated and second.requested == first.requested


def test_nothing_failed_means_nothing_requested(c):
    run = finished_run(c, failing=())
    result = rs.resend_failed(c, run.id, "alice")
    assert result.requested == [] and not result.repeated
    assert result.request_id == rs.request_id(run.id, [])


def test_unknown_deliveries_are_offered_too(c):
    run = finished_run(c)
    d_b = c.store.list_deliveries(run_id=run.id, recipient=B).items[0]
    c.store.update_delivery(d_b.id, status=DeliveryStatus.UNKNOWN)
    assert len(rs.resend_failed(c, run.id, "alice").requested) == 2


def test_only_this_runs_failures_are_resent(c):
    other = finished_run(c, request_id="other")
    run = finished_run(c, failing=(B,), request_id="mine")
    result = rs.resend_failed(c, run.id, "alice")
    assert [c.store.get_delivery(d).recipient for d in result.requested] == [B]
    assert c.store.list_deliveries(run_id=other.id, recipient=A).items[0].status == DeliveryStatus.FAILED


def test_failures_are_read_past_a_page_and_capped(c, monkeypatch):
    run = finished_run(c, failing=(A, B, C))
    monkeypatch.setattr(rs, "PAGE", 1)
    assert len(rs.failed_deliveries(c, run.id)) == 3
    assert len(rs.failed_deliveries(c, run.id, limit=2)) == 2
    assert len(rs.failed_deliveries(c, run.id, limit=3)) == 3


def test_the_request_id_covers_the_exact_failures():
    from herald.domain.records import Delivery

    def d(i, attempts):
        return Delivery(
            id=i,
            run_id="r",
            report_id="board-pack",
            channel="email",
            recipient=f"{i}@x.com",
            attempts=attempts,
            created_at=factories.T0,
            updated_at=factories.T0,
        )

    assert rs.request_id("r", [d("a", 1), d("b", 1)]) == rs.request_id("r", [d("b", 1), d("a", 1)])
    assert rs.request_id("r", [d("a", 1)]) != rs.request_id("r", [d("a", 2)])
    assert rs.request_id("r", [d("a", 1)]) != rs.request_id("s", [d("a", 1)])
    assert rs.request_id("r", [d("a", 1), d("b", 1)]) != rs.request_id("r", [d("a", 1)])


def test_a_resend_that_crashed_before_its_task_is_queued_again(c):
    run = finished_run(c)
    result = rs.resend_failed(c, run.id, "alice")
    c.queue.tasks.clear()
    c.queue.pending.clear()  # the queued write committed, the enqueue was lost
    rs.resend_failed(c, run.id, "alice")  # nothing failed now: but the stranded one is queued again
    queued = [t for t in c.queue.tasks.values() if t.path == SEND_DELIVERY]
    assert [t.payload["delivery_id"] for t in queued] == result.requested
    drain(c)
    assert len(c.mailer.sent[A]) == 1
