"""services/feedback.py edges, from its docstring and ARCHITECTURE.md decision 8: each
``sg_event_id`` applies once (content when there is none), events are correlated by our
``delivery_id`` else by the ``sg_message_id`` prefix, first times compare as whole UTC
seconds, the status only moves through the transition table, every stop-sending event of a
batch suppresses, and a confirmed unconfirmed send that was its run's last open one finishes it."""

from __future__ import annotations

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus
from herald.ports.clock import FakeClock
from herald.services import feedback as fb
from herald.services import runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import FINISH_RUN
from tests import factories
from tests.drive import drain
from tests.unit import test_services_feedback as base
from tests.unit.test_services_feedback import NOW, T, delivery, ev, fold, iso

c, sent = base.c, base.sent  # the embedded container with board-pack, and its two sent e-mails

A, B = "a@example.com", "b@example.com"


def finish_tasks(c):
    return [t.payload for t in c.queue.tasks.values() if t.path == FINISH_RUN]


@pytest.fixture
def unconfirmed(tmp_path):
    """Two e-mails whose sends timed out with the outcome unknown: both wait for their events."""
    c = factories.container(tmp_path, FakeClock(NOW), sendgrid_api_key="SG.x", sendgrid_webhook_public_key="k")
    apply_definitions(c, [factories.report(recipients={"email": [A, B]})])
    for r in (A, B):
        c.mailer.script[r] = [DeliveryError("timeout", permanent=False, unknown=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    found = {d.recipient: d for d in c.store.list_deliveries(run_id=run.id).items}
    assert {d.status for d in found.values()} == {DeliveryStatus.RECONCILING}
    c.queue.tasks.clear()
    return c, run, found


# Event ids ----------------------------------------------------------------------------------
def test_a_one_character_event_id_is_still_the_event_id(c, sent):
    a = sent[A].id
    assert fb.ingest(c, [ev("open", T, delivery_id=a, sg_event_id="7")]).applied == 1
    again = fb.ingest(c, [ev("open", T + 5, delivery_id=a, sg_event_id="7")])  # same id: SendGrid's retry
    assert (again.applied, again.duplicates) == (0, 1)
    assert c.store.get_delivery(a).events["opens_human"] == 1


def test_a_retry_of_an_event_without_id_is_a_duplicate_whatever_its_key_order(c, sent):
    event = ev("open", T, delivery_id=sent[A].id)
    assert fb.ingest(c, [event]).applied == 1
    reordered = dict(reversed(list(event.items())))
    assert list(reordered) != list(event)
    again = fb.ingest(c, [reordered])
    assert (again.applied, again.duplicates) == (0, 1)


# Correlation and counting -------------------------------------------------------------------
def test_unknown_event_types_are_counted_per_type(c, sent):
    result = fb.ingest(c, [ev("something_new", sg_event_id="n1"), ev("something_new", sg_event_id="n2")])
    assert result.ignored == 2 and result.unknown_types == {"something_new": 2}


def test_events_with_neither_id_are_each_counted_unmatched(c, sent):
    result = fb.ingest(c, [ev("processed", sg_event_id="x1"), ev("delivered", sg_event_id="x2")])
    assert (result.unmatched, result.applied) == (2, 0)


@pytest.mark.parametrize("bad_id", ["", 7])
def test_an_empty_or_non_text_delivery_id_falls_back_to_the_message_id(c, sent, bad_id):
    b = sent[B]
    event = ev("delivered", delivery_id=bad_id, sg_message_id=f"{b.provider_message_id}.filter", sg_event_id="m1")
    result = fb.ingest(c, [event])
    assert (result.applied, result.unmatched) == (1, 0)
    assert c.store.get_delivery(b.id).status == DeliveryStatus.DELIVERED


def test_the_message_id_is_the_part_before_the_first_dot(c, sent):
    # SendGrid's sg_message_id is the X-Message-Id followed by several dotted parts.
    b = sent[B]
    sg_message_id = f"{b.provider_message_id}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC1A5-8.0"
    result = fb.ingest(c, [ev("delivered", sg_message_id=sg_message_id, sg_event_id="m1")])
    assert (result.applied, result.unmatched) == (1, 0)
    assert c.store.get_delivery(b.id).status == DeliveryStatus.DELIVERED


def test_events_found_by_delivery_id_and_by_message_id_all_apply(c, sent):
    a = sent[A]
    result = fb.ingest(
        c,
        [
            ev("delivered", T, delivery_id=a.id, sg_event_id="e1"),
            ev("open", T + 5, sg_message_id=f"{a.provider_message_id}.filter", sg_event_id="e2"),
        ],
    )
    assert (result.applied, result.deliveries) == (2, 1)
    assert [h["event"] for h in c.store.get_delivery(a.id).events["history"]] == ["delivered", "open"]


def test_events_without_a_usable_timestamp_are_applied_as_now(c, sent):
    a = sent[A].id
    result = fb.ingest(
        c,
        [{"event": "processed", "delivery_id": a, "sg_event_id": "p"}, ev("delivered", "soon", delivery_id=a)],
    )
    assert result.applied == 2
    e = c.store.get_delivery(a).events
    assert e["processed_at"] == e["delivered_at"] == NOW.isoformat()


def test_events_of_the_same_second_keep_their_batch_order(c, sent):
    # "The latest event per (recipient, scope) wins": within one second, the later one in the batch.
    a = sent[A].id
    result = fb.ingest(
        c,
        [
            ev("group_resubscribe", T, delivery_id=a, sg_event_id="x-resubscribe"),
            ev("group_unsubscribe", T, delivery_id=a, sg_event_id="a-unsubscribe"),
        ],
    )
    assert result.suppressed == 1
    assert [s.reason for s in c.store.list_suppressions()] == ["group_unsubscribe"]


def test_a_non_text_message_id_in_an_event_is_not_kept():
    out = fold(delivery(provider_message_id=None), ev("processed", sg_message_id=12345))
    assert "message_id" not in out["events"] and out["events"]["processed_at"] == iso(T)


# First times and status ---------------------------------------------------------------------
def test_a_kept_time_with_another_offset_compares_as_its_utc_time():
    d = delivery(events={"delivered_at": "2026-11-02T08:30:00+01:00"})  # 07:30:00 UTC, before T + 60
    assert fold(d, ev("delivered", T + 60))["events"]["delivered_at"] == "2026-11-02T08:30:00+01:00"


def test_a_kept_time_with_microseconds_is_not_later_than_an_event_of_the_same_second():
    # Times are compared as whole UTC seconds: the same second is not earlier, the first time stays.
    d = delivery(events={"delivered_at": "2026-11-02T07:30:00.500000+00:00"})
    assert fold(d, ev("delivered", T))["events"]["delivered_at"] == "2026-11-02T07:30:00.500000+00:00"


def test_a_delivered_delivery_does_not_fall_back_to_sent():
    out = fold(delivery(DeliveryStatus.DELIVERED), ev("deferred"))
    assert out["status"] == DeliveryStatus.DELIVERED


# Suppressions -------------------------------------------------------------------------------
def test_every_stop_sending_event_of_a_batch_suppresses(c, sent):
    result = fb.ingest(
        c,
        [
            ev("delivered", T, delivery_id=sent[A].id, sg_event_id="d1"),
            ev("bounce", T + 1, delivery_id=sent[A].id, sg_event_id="b1"),
            ev("spamreport", T + 2, delivery_id=sent[B].id, sg_event_id="s1"),
        ],
    )
    assert result.suppressed == 2
    assert sorted((s.recipient, s.reason) for s in c.store.list_suppressions()) == [(A, "bounce"), (B, "spamreport")]


def test_an_event_that_suppresses_nothing_does_not_hide_the_next(c, sent):
    fb.ingest(
        c,
        [
            ev("delivered", T, delivery_id=sent[A].id, sg_event_id="d1"),
            ev("bounce", T, delivery_id=sent[B].id, sg_event_id="b1"),
        ],
    )
    assert [(s.recipient, s.reason) for s in c.store.list_suppressions()] == [(B, "bounce")]


def test_a_suppression_without_event_time_is_dated_now(c, sent):
    fb.ingest(c, [{"event": "bounce", "delivery_id": sent[A].id, "sg_event_id": "b1"}])
    (s,) = c.store.list_suppressions()
    assert (s.recipient, s.reason, s.created_at) == (A, "bounce", NOW)


def test_a_resubscribe_in_the_same_second_as_the_unsubscribe_lifts_it(c, sent):
    a = sent[A].id
    fb.ingest(c, [ev("group_unsubscribe", T, delivery_id=a, sg_event_id="u1")])
    assert fb.ingest(c, [ev("group_resubscribe", T, delivery_id=a, sg_event_id="r1")]).lifted == 1
    assert c.store.list_suppressions() == []


def test_resubscribes_of_several_people_in_one_batch_all_lift(c, sent):
    fb.ingest(
        c,
        [
            ev("group_unsubscribe", T, delivery_id=sent[A].id, sg_event_id="u1"),
            ev("group_unsubscribe", T, delivery_id=sent[B].id, sg_event_id="u2"),
        ],
    )
    result = fb.ingest(
        c,
        [
            ev("group_resubscribe", T + 10, delivery_id=sent[A].id, sg_event_id="r1"),
            ev("group_resubscribe", T + 10, delivery_id=sent[B].id, sg_event_id="r2"),
        ],
    )
    assert result.lifted == 2 and c.store.list_suppressions() == []


def test_a_lift_does_not_stop_the_suppressions_after_it(c, sent):
    fb.ingest(c, [ev("group_unsubscribe", T, delivery_id=sent[A].id, sg_event_id="u1")])
    result = fb.ingest(
        c,
        [
            ev("group_resubscribe", T + 10, delivery_id=sent[A].id, sg_event_id="r1"),
            ev("bounce", T + 10, delivery_id=sent[B].id, sg_event_id="b1"),
        ],
    )
    assert (result.lifted, result.suppressed) == (1, 1)
    assert [(s.recipient, s.reason) for s in c.store.list_suppressions()] == [(B, "bounce")]


def test_events_of_a_non_email_delivery_do_not_stop_the_email_ones(tmp_path):
    c = factories.container(tmp_path, FakeClock(NOW))
    apply_definitions(c, [factories.report(recipients={"slack": ["C0123456789"], "email": [A]})])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    by_channel = {d.channel: d for d in c.store.list_deliveries(run_id=run.id).items}
    result = fb.ingest(
        c,
        [
            ev("bounce", T, delivery_id=by_channel["slack"].id, sg_event_id="b0"),
            ev("bounce", T, delivery_id=by_channel["email"].id, sg_event_id="b1"),
        ],
    )
    assert result.suppressed == 1
    assert [(s.recipient, s.reason) for s in c.store.list_suppressions()] == [(A, "bounce")]


# Finishing the run --------------------------------------------------------------------------
def test_a_run_finishes_only_when_its_last_unconfirmed_send_is_confirmed(unconfirmed):
    c, run, found = unconfirmed
    fb.ingest(c, [ev("processed", delivery_id=found[A].id, sg_event_id="p1")])
    assert finish_tasks(c) == []  # b is still waiting for its events
    fb.ingest(c, [ev("processed", delivery_id=found[B].id, sg_event_id="p2")])
    assert finish_tasks(c) == [{"run_id": run.id}]


def test_settle_confirms_an_unconfirmed_send_from_facts_kept_before_and_finishes_the_run(unconfirmed):
    c, run, found = unconfirmed
    # The webhook was faster than the send's answer: the facts (and the message id) are there.
    for r, msg in ((A, "sg-a"), (B, "sg-b")):
        c.store.update_delivery(
            found[r].id, provider_message_id=None, events={"processed_at": iso(T), "message_id": msg}
        )
    later = c.clock.advance(minutes=5)
    settled = fb.settle(c, found[A].id)
    assert settled is not None and settled.status == DeliveryStatus.SENT
    assert settled.provider_message_id == "sg-a" and settled.updated_at == later
    stored = c.store.get_delivery(found[A].id)
    assert stored.events["reconciled"] == "confirmed" and stored.updated_at == later
    assert finish_tasks(c) == []  # b still open
    assert fb.settle(c, found[B].id).provider_message_id == "sg-b"
    assert finish_tasks(c) == [{"run_id": run.id}]


def test_settle_leaves_an_unconfirmed_send_with_only_a_deferral_alone(unconfirmed):
    c, _run, found = unconfirmed
    d = c.store.update_delivery(found[A].id, events={"deferrals": 1})
    c.clock.advance(minutes=5)
    assert fb.settle(c, d.id) is None
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.RECONCILING and stored.updated_at == d.updated_at
    assert stored.events == {"deferrals": 1}
    assert finish_tasks(c) == []


def test_settle_moves_nothing_without_facts_or_on_a_final_status(c, sent):
    a = sent[A]
    c.store.update_delivery(a.id, status=DeliveryStatus.BOUNCED, events={"delivered_at": iso(T)})
    c.clock.advance(minutes=5)
    assert fb.settle(c, a.id) is None
    assert c.store.get_delivery(a.id).status == DeliveryStatus.BOUNCED


@pytest.mark.parametrize("split", [0, 1, 2])
def test_delivered_at_is_the_earliest_proof_whichever_batches_the_events_came_in(split):
    # An open can be stamped before SendGrid's own `delivered` (its clocks, MPP prefetch):
    # the mailbox had the message by the earliest of them, in one batch or in several.
    events = [ev("open", T + 5), ev("delivered", T + 10), ev("click", T + 20)]
    first = fold(delivery(), *events[:split])
    d = delivery(events=first["events"]) if split else delivery()
    out = fold(d, *events[split:])
    assert out["events"]["delivered_at"] == iso(T + 5)
