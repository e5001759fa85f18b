"""services/feedback.py: SendGrid Event Webhook facts (its docstring and ARCHITECTURE.md
decision 8; event fields: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event).
Facts are first times and counters, the status only moves forward, an open implies
delivery, duplicates apply once, and bounces / spam reports / unsubscribes suppress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus
from herald.ports.clock import FakeClock
from herald.ports.store import Suppression
from herald.services import feedback as fb
from herald.services import runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import FINISH_RUN
from tests import factories
from tests.drive import drain

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
T = int(datetime(2026, 11, 2, 7, 30, tzinfo=UTC).timestamp())


def iso(ts):
    return datetime.fromtimestamp(ts, UTC).isoformat()


def delivery(status=DeliveryStatus.SENT, **fields):
    base = {
        "id": "d1",
        "run_id": "r1",
        "report_id": "board-pack",
        "channel": "email",
        "recipient": "a@example.com",
        "status": status,
        "provider_message_id": "msg-1",
        "created_at": NOW - timedelta(hours=1),
        "updated_at": NOW - timedelta(hours=1),
    }
    return Delivery(**{**base, **fields})


def ev(kind, ts=T, **fields):
    return {"event": kind, "timestamp": ts, **fields}


def fold(d, *events):
    return fb.fold_events(d, list(events), NOW)


# Facts --------------------------------------------------------------------------------------
def test_processed_and_delivered_keep_their_first_times():
    out = fold(delivery(), ev("processed", T), ev("delivered", T + 60), ev("delivered", T + 5))
    e = out["events"]
    assert e["processed_at"] == iso(T) and e["delivered_at"] == iso(T + 5)
    assert e["last_event_at"] == iso(T + 60) and out["updated_at"] == NOW
    assert out["status"] == DeliveryStatus.DELIVERED
    assert [h["event"] for h in e["history"]] == ["processed", "delivered", "delivered"]
    assert [h["at"] for h in e["history"]] == [iso(T), iso(T + 5), iso(T + 60)]  # sorted by time
    assert e["message_id"] == "msg-1"


def test_deferrals_are_counted_with_their_response():
    out = fold(delivery(), ev("deferred", response="4.2.1 " + "x" * 300), ev("deferred", T + 1))
    e = out["events"]
    assert e["deferrals"] == 2
    assert e["history"][0] == {"event": "deferred", "at": iso(T), "response": "4.2.1 " + "x" * 194}
    assert e["history"][1]["response"] == ""
    assert out["status"] == DeliveryStatus.SENT


def test_a_hard_bounce_and_a_block_are_told_apart():
    hard = fold(delivery(), ev("bounce", reason="550 " + "r" * 400, status="5.1.1 and more text here"))["events"]
    assert hard["bounced_at"] == iso(T) and hard["bounce_type"] == "bounce"
    assert hard["bounce_reason"] == ("550 " + "r" * 400)[:300] and hard["bounce_status"] == "5.1.1 and more text "
    assert hard["history"][0] == {"event": "bounce", "at": iso(T), "type": "bounce"}
    blocked = fold(delivery(), ev("bounce", type="blocked"))["events"]
    assert blocked["bounce_type"] == "blocked" and blocked["bounce_reason"] == "" and blocked["bounce_status"] == ""
    assert fold(delivery(), ev("bounce"))["status"] == DeliveryStatus.BOUNCED


def test_a_drop_keeps_its_reason():
    out = fold(delivery(), ev("dropped", reason="Bounced Address" + "!" * 400))
    assert (
        out["events"]["dropped_at"] == iso(T) and out["events"]["drop_reason"] == ("Bounced Address" + "!" * 400)[:300]
    )
    assert out["status"] == DeliveryStatus.DROPPED
    assert fold(delivery(), ev("dropped"))["events"]["drop_reason"] == ""


def test_opens_are_split_into_people_and_machines_and_imply_delivery():
    out = fold(
        delivery(),
        ev("open", T + 10, sg_machine_open=True),
        ev("open", T + 20, sg_machine_open=False),
        ev("open", T + 30),
    )
    e = out["events"]
    assert (e["opens_machine"], e["opens_human"]) == (1, 2)
    assert e["machine_opened_at"] == iso(T + 10) and e["opened_at"] == iso(T + 20)
    assert [h.get("machine") for h in e["history"]] == [True, False, False]
    assert e["delivered_at"] == iso(T + 10)  # the earliest proof it reached the mailbox
    assert out["status"] == DeliveryStatus.DELIVERED
    assert fold(delivery(), ev("open", sg_machine_open="yes"))["events"]["opens_human"] == 1  # only True is a machine


def test_clicks_spam_reports_and_unsubscribes_are_facts_and_proofs_of_delivery():
    out = fold(delivery(), ev("click", T + 3), ev("click", T + 1, url="https://x/l/secret"))
    e = out["events"]
    assert e["clicks"] == 2 and e["clicked_at"] == iso(T + 1) and "secret" not in str(e)
    assert e["delivered_at"] == iso(T + 1)
    assert fold(delivery(), ev("spamreport"))["events"]["spamreport_at"] == iso(T)
    unsub = fold(delivery(), ev("unsubscribe"))
    assert unsub["events"]["unsubscribed_at"] == iso(T) and unsub["status"] == DeliveryStatus.DELIVERED


def test_group_subscription_changes_keep_the_latest_time():
    out = fold(
        delivery(),
        ev("group_unsubscribe", T + 10),
        ev("group_unsubscribe", T),
        ev("group_resubscribe", T + 20),
    )
    e = out["events"]
    assert e["group_unsubscribed_at"] == iso(T + 10) and e["group_resubscribed_at"] == iso(T + 20)
    assert "delivered_at" not in e


def test_events_fold_into_what_was_there():
    d = delivery(
        events={"processed_at": iso(T - 100), "deferrals": 2, "history": [{"event": "processed", "at": iso(T - 100)}]}
    )
    e = fold(d, ev("processed", T), ev("deferred", T + 1))["events"]
    assert e["processed_at"] == iso(T - 100) and e["deferrals"] == 3
    assert [h["at"] for h in e["history"]] == [iso(T - 100), iso(T), iso(T + 1)]


def test_history_keeps_the_last_twenty_events():
    e = fold(delivery(), *[ev("deferred", T + i) for i in range(25)])["events"]
    assert len(e["history"]) == fb.HISTORY_CAP == 20 and e["history"][0]["at"] == iso(T + 5)


def test_an_event_without_a_usable_timestamp_is_taken_as_now_to_the_second():
    now = NOW.replace(microsecond=123456)
    for raw in (None, "soon", 10**20):
        out = fb.fold_events(delivery(), [{"event": "processed", "timestamp": raw}], now)
        assert out["events"]["processed_at"] == NOW.isoformat()


def test_the_message_id_comes_from_the_send_or_else_the_event():
    assert (
        fold(delivery(provider_message_id=None), ev("processed", sg_message_id="abc.filter0001"))["events"][
            "message_id"
        ]
        == "abc"
    )
    assert fold(delivery(), ev("processed", sg_message_id="other.x"))["events"]["message_id"] == "msg-1"
    assert "message_id" not in fold(delivery(provider_message_id=None), ev("processed"))["events"]


def test_times_written_with_microseconds_or_offsets_compare_as_times():
    d = delivery(events={"delivered_at": "2026-11-02T08:30:00.500000+01:00"})  # 07:30:00 UTC
    e = fold(d, ev("delivered", T + 1))["events"]
    assert e["delivered_at"] == "2026-11-02T08:30:00.500000+01:00"  # earlier than 07:30:01 UTC: kept
    e = fold(d, ev("delivered", T - 1))["events"]
    assert e["delivered_at"] == iso(T - 1)


# Status -----------------------------------------------------------------------------------
def test_the_status_only_moves_forward():
    delivered = delivery(DeliveryStatus.DELIVERED, events={"delivered_at": iso(T)})
    assert fold(delivered, ev("dropped"))["status"] == DeliveryStatus.DELIVERED  # a drop after delivery is noise
    assert fold(delivered, ev("bounce"))["status"] == DeliveryStatus.BOUNCED  # a later bounce ends it
    bounced = delivery(DeliveryStatus.BOUNCED, events={"bounced_at": iso(T)})
    assert "status" not in fold(bounced, ev("delivered", T + 60))  # final: facts only
    assert fold(bounced, ev("delivered", T + 60))["events"]["delivered_at"] == iso(T + 60)


@pytest.mark.parametrize(
    "status", [DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRYING, DeliveryStatus.FAILED]
)
def test_in_flight_and_failed_deliveries_only_gain_facts(status):
    out = fold(delivery(status), ev("delivered"))
    assert "status" not in out and out["events"]["delivered_at"] == iso(T)


@pytest.mark.parametrize("status", [DeliveryStatus.RECONCILING, DeliveryStatus.UNKNOWN])
def test_an_unconfirmed_send_is_confirmed_by_any_sign_the_provider_has_it(status):
    d = delivery(status, provider_message_id=None, last_error="outcome unknown", error_kind="transient")
    out = fold(d, ev("processed", sg_message_id="sg-9.x"))
    assert out["status"] == DeliveryStatus.SENT and out["events"]["reconciled"] == "confirmed"
    assert out["provider_message_id"] == "sg-9" and out["delivered_at"] == datetime.fromtimestamp(T, UTC)
    assert (out["lease_until"], out["next_attempt_at"], out["last_error"], out["error_kind"]) == (None, None, "", "")
    assert out["attempt_log"][-1] == {"at": NOW.isoformat(), "result": "confirmed"}
    delivered = fold(d, ev("delivered"))
    assert delivered["status"] == DeliveryStatus.DELIVERED and delivered["delivered_at"] == datetime.fromtimestamp(
        T, UTC
    )
    assert fold(d, ev("bounce"))["status"] == DeliveryStatus.BOUNCED
    dropped = fold(d, ev("dropped"))
    assert dropped["status"] == DeliveryStatus.DROPPED and dropped["delivered_at"] == NOW  # accepted "now"
    waiting = fold(d, ev("deferred"))
    assert "status" not in waiting and "reconciled" not in waiting["events"]  # still waiting for the outcome


# Ingest -------------------------------------------------------------------------------------
@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, FakeClock(NOW))
    apply_definitions(container, [factories.report(recipients={"email": ["A@Example.com", "b@example.com"]})])
    return container


@pytest.fixture
def sent(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    return {d.recipient.lower(): d for d in c.store.list_deliveries(run_id=run.id).items}


def test_a_batch_is_counted_event_by_event(c, sent):
    a = sent["a@example.com"]
    batch = [
        ev("delivered", delivery_id=a.id, sg_event_id="e1"),
        ev("delivered", delivery_id=a.id, sg_event_id="e1"),  # SendGrid retried it
        ev("open", delivery_id=a.id, sg_event_id="e2"),
        ev("processed", sg_message_id=f"{sent['b@example.com'].provider_message_id}.filter", sg_event_id="e3"),
        ev("processed", delivery_id="not-ours", sg_event_id="e4"),
        ev("processed", sg_message_id="unknown-msg.x", sg_event_id="e5"),
        ev("processed", sg_event_id="e6"),  # neither id
        ev("something_new", sg_event_id="e7"),
        ev("something_new" + "x" * 50, sg_event_id="e8"),
        {"event": 42},
        "not an object",
    ]
    result = fb.ingest(c, batch)
    assert result.to_doc() == {
        "received": 11,
        "applied": 3,
        "duplicates": 1,
        "unmatched": 3,
        "ignored": 4,
        "deliveries": 2,
        "suppressed": 0,
        "lifted": 0,
        "unknown_types": {"something_new": 1, ("something_new" + "x" * 50)[:40]: 1},
    }
    assert c.store.get_delivery(a.id).status == DeliveryStatus.DELIVERED
    again = fb.ingest(c, batch[:1])
    assert (again.applied, again.duplicates, again.deliveries) == (0, 1, 0)


def test_events_without_an_id_are_applied_once_by_their_content(c, sent):
    a = sent["a@example.com"]
    event = ev("open", delivery_id=a.id)
    assert fb.ingest(c, [event]).applied == 1
    assert fb.ingest(c, [dict(event)]).duplicates == 1
    assert fb.ingest(c, [ev("open", T + 1, delivery_id=a.id)]).applied == 1
    assert fb._event_id({"sg_event_id": "x" * 201, "a": 1}).startswith("h:")
    assert fb._event_id({"sg_event_id": ""}).startswith("h:") and len(fb._event_id({})) == 42
    assert fb._event_id({"sg_event_id": "x" * 200}) == "x" * 200


def test_a_batch_is_folded_in_event_time_order(c, sent):
    a = sent["a@example.com"]
    fb.ingest(
        c,
        [
            ev("delivered", T + 60, delivery_id=a.id, sg_event_id="late"),
            ev("processed", T, delivery_id=a.id, sg_event_id="early"),
        ],
    )
    history = c.store.get_delivery(a.id).events["history"]
    assert [h["event"] for h in history] == ["processed", "delivered"]


@pytest.mark.parametrize(
    ("event", "scope", "reason"),
    [
        (ev("bounce"), "*", "bounce"),
        (ev("bounce", type="blocked"), "board-pack", "blocked"),
        (ev("spamreport"), "*", "spamreport"),
        (ev("unsubscribe"), "*", "unsubscribe"),
        (ev("group_unsubscribe"), "*", "group_unsubscribe"),
        (ev("dropped", reason="Bounced Address"), "*", "bounce"),
        (ev("dropped", reason="Spam Reporting Address"), "*", "spamreport"),
        (ev("dropped", reason="Unsubscribed Address"), "*", "unsubscribe"),
    ],
)
def test_events_that_mean_stop_sending_suppress_the_address(c, sent, event, scope, reason):
    a = sent["a@example.com"]
    result = fb.ingest(c, [{**event, "delivery_id": a.id, "sg_event_id": "s1"}])
    assert result.suppressed == 1
    (s,) = c.store.list_suppressions()
    assert (s.recipient, s.scope, s.reason, s.created_at) == (
        "a@example.com",
        scope,
        reason,
        datetime.fromtimestamp(T, UTC),
    )


@pytest.mark.parametrize("event", [ev("dropped", reason="Invalid"), ev("delivered"), ev("open"), ev("deferred")])
def test_other_events_suppress_nothing(c, sent, event):
    fb.ingest(c, [{**event, "delivery_id": sent["a@example.com"].id, "sg_event_id": "s1"}])
    assert c.store.list_suppressions() == []


def test_a_resubscribe_lifts_only_the_group_unsubscribe_it_follows(c, sent):
    a = sent["a@example.com"].id
    fb.ingest(c, [ev("group_unsubscribe", T, delivery_id=a, sg_event_id="u1")])
    result = fb.ingest(c, [ev("group_resubscribe", T + 10, delivery_id=a, sg_event_id="r1")])
    assert result.lifted == 1 and c.store.list_suppressions() == []
    c.store.add_suppression(Suppression("a@example.com", "*", "bounce", datetime.fromtimestamp(T, UTC)))
    assert fb.ingest(c, [ev("group_resubscribe", T + 20, delivery_id=a, sg_event_id="r2")]).lifted == 0
    assert [s.reason for s in c.store.list_suppressions()] == ["bounce"]


def test_a_resubscribe_older_than_the_unsubscribe_lifts_nothing(c, sent):
    a = sent["a@example.com"].id
    fb.ingest(c, [ev("group_unsubscribe", T + 10, delivery_id=a, sg_event_id="u1")])
    assert fb.ingest(c, [ev("group_resubscribe", T, delivery_id=a, sg_event_id="r1")]).lifted == 0
    assert len(c.store.list_suppressions()) == 1


def test_in_one_batch_the_latest_of_unsubscribe_and_resubscribe_wins(c, sent):
    a = sent["a@example.com"].id
    fb.ingest(c, [ev("group_unsubscribe", T, delivery_id=a, sg_event_id="u0")])
    result = fb.ingest(
        c,
        [
            ev("group_resubscribe", T + 20, delivery_id=a, sg_event_id="r1"),
            ev("group_unsubscribe", T + 10, delivery_id=a, sg_event_id="u1"),
        ],
    )
    assert result.lifted == 1 and c.store.list_suppressions() == []
    result = fb.ingest(
        c,
        [
            ev("group_resubscribe", T + 30, delivery_id=a, sg_event_id="r2"),
            ev(
                "group_unsubscribe", T + 30, delivery_id=a, sg_event_id="u2"
            ),  # the same second: the later one in the batch
        ],
    )
    assert result.suppressed == 1


def test_a_confirmed_unknown_send_that_was_the_last_open_one_finishes_its_run(tmp_path):
    from herald.domain.errors import DeliveryError

    c = factories.container(tmp_path, sendgrid_api_key="SG.x", sendgrid_webhook_public_key="k")
    apply_definitions(c, [factories.report(recipients={"email": ["a@example.com"]})])
    c.mailer.script["a@example.com"] = [DeliveryError("timeout", permanent=False, unknown=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    (d,) = c.store.list_deliveries(run_id=run.id).items
    assert d.status == DeliveryStatus.RECONCILING
    c.queue.tasks.clear()
    fb.ingest(c, [ev("processed", delivery_id=d.id, sg_event_id="p1")])
    assert [t.payload for t in c.queue.tasks.values() if t.path == FINISH_RUN] == [{"run_id": run.id}]
    c.queue.tasks.clear()
    fb.ingest(c, [ev("delivered", delivery_id=d.id, sg_event_id="p2")])  # it was sent already: no second finish
    assert [t for t in c.queue.tasks.values() if t.path == FINISH_RUN] == []


def test_settle_rederives_the_status_from_facts_kept_before_the_send_was_recorded(c, sent):
    a = sent["a@example.com"]
    c.store.update_delivery(a.id, events={"delivered_at": iso(T)})
    settled = fb.settle(c, a.id)
    assert settled is not None and settled.status == DeliveryStatus.DELIVERED
    assert settled.updated_at == NOW
    assert fb.settle(c, a.id) is None  # nothing to move now
    b = sent["b@example.com"]
    assert fb.settle(c, b.id) is None  # no facts
