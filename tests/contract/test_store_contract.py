"""The Store port contract, run against every implementation (see conftest.py).

What the services rely on: creates are idempotent, status changes are compare-and-swap,
a delivery is claimed by exactly one worker, lists are ordered and page completely, and
aware UTC datetimes come back exactly as they went in.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from herald.domain.errors import InvalidTransition
from herald.domain.records import Alert, Delivery, Run
from herald.domain.states import DELIVERY_CLAIMABLE, DELIVERY_OPEN, DeliveryStatus, RunStatus
from herald.ports.store import Suppression
from tests.factories import report

NOW = datetime(2026, 11, 2, 7, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(minutes=2)


def make_run(run_id: str = "r1", report_id: str = "board-pack", at: datetime = NOW, **fields) -> Run:
    return Run(id=run_id, report_id=report_id, trigger="schedule", slot=at, created_at=at, updated_at=at, **fields)


def make_delivery(
    delivery_id: str = "d1", run_id: str = "r1", recipient: str = "a@example.com", at: datetime = NOW, **fields
) -> Delivery:
    return Delivery(
        id=delivery_id,
        run_id=run_id,
        report_id=fields.pop("report_id", "board-pack"),
        channel="email",
        recipient=recipient,
        created_at=at,
        updated_at=at,
        **fields,
    )


def make_alert(alert_id: str, at: datetime = NOW, report_id: str | None = "board-pack") -> Alert:
    return Alert(
        id=alert_id,
        kind="delivery_failures",
        target="cfo@example.com",
        report_id=report_id,
        subject="s",
        body="b",
        created_at=at,
    )


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)


# Reports ---------------------------------------------------------------------------------
def test_report_round_trips_and_save_overwrites(store):
    definition = report()
    assert store.get_report("board-pack") is None
    store.save_report(definition, NOW)
    stored = store.get_report("board-pack")
    assert stored.definition == definition
    assert stored.next_fire_at == NOW
    assert_utc(stored.next_fire_at)

    renamed = report(name="Board pack (v2)", enabled=False)
    store.save_report(renamed, None)
    stored = store.get_report("board-pack")
    assert stored.definition == renamed and stored.next_fire_at is None
    assert [r.definition.id for r in store.list_reports()] == ["board-pack"]


def test_list_reports_by_id(store):
    for report_id in ["c-report", "a-report", "b-report"]:
        store.save_report(report(id=report_id), NOW)
    assert [r.definition.id for r in store.list_reports()] == ["a-report", "b-report", "c-report"]


def test_due_reports_only_enabled_only_due_oldest_first_limited(store):
    store.save_report(report(id="late"), NOW - timedelta(minutes=5))
    store.save_report(report(id="exact"), NOW)
    store.save_report(report(id="earliest"), NOW - timedelta(hours=1))
    store.save_report(report(id="future"), NOW + timedelta(microseconds=1))
    store.save_report(report(id="disabled", enabled=False), NOW - timedelta(hours=2))
    store.save_report(report(id="unscheduled"), None)

    due = store.due_reports(NOW, limit=10)
    assert [r.definition.id for r in due] == ["earliest", "late", "exact"]
    assert [r.definition.id for r in store.due_reports(NOW, limit=2)] == ["earliest", "late"]
    assert store.due_reports(NOW - timedelta(days=1), limit=10) == []


def test_advance_schedule_is_compare_and_swap(store):
    store.save_report(report(), NOW)
    later = NOW + timedelta(days=1)
    assert store.advance_schedule("board-pack", NOW, later) is True
    assert store.get_report("board-pack").next_fire_at == later
    # A second ticker still holding the old value loses.
    assert store.advance_schedule("board-pack", NOW, later + timedelta(days=1)) is False
    assert store.get_report("board-pack").next_fire_at == later
    assert store.advance_schedule("board-pack", later, None) is True
    assert store.get_report("board-pack").next_fire_at is None
    assert store.advance_schedule("no-such-report", NOW, later) is False


# Runs ------------------------------------------------------------------------------------
def test_create_run_is_idempotent_and_first_write_wins(store):
    run = make_run()
    assert store.create_run(run) is True
    assert store.create_run(run.model_copy(update={"summary": "second"})) is False
    assert store.get_run("r1") == run
    assert store.get_run("missing") is None


def test_run_round_trips_exactly(store):
    plus_two = timezone(timedelta(hours=2))
    run = make_run(
        params={"region": "emea", "k": "v"},
        extra_recipients=["x@example.com"],
        period="2026-11",
        started_at=datetime(2026, 11, 2, 9, 0, 1, 999999, tzinfo=plus_two),  # the same instant comes back
        artifact_key="runs/r1/report.pdf",
        recipients_total=3,
        heartbeat_sent=True,
    )
    store.create_run(run)
    stored = store.get_run("r1")
    assert stored == run
    assert stored.started_at == datetime(2026, 11, 2, 7, 0, 1, 999999, tzinfo=UTC)
    for value in (stored.created_at, stored.updated_at, stored.slot):
        assert_utc(value)


def test_transition_run_is_compare_and_swap(store):
    store.create_run(make_run())
    later = NOW + timedelta(seconds=1, microseconds=7)
    assert store.transition_run("r1", [RunStatus.WAITING], RunStatus.RENDERING, started_at=later) is None
    assert store.get_run("r1").status == RunStatus.PENDING

    updated = store.transition_run(
        "r1", [RunStatus.PENDING, RunStatus.WAITING], RunStatus.RENDERING, started_at=later, updated_at=later
    )
    assert updated is not None
    assert updated.status == RunStatus.RENDERING and updated.started_at == later
    assert store.get_run("r1") == updated
    assert store.transition_run("missing", [RunStatus.PENDING], RunStatus.RENDERING) is None


def test_update_run_sets_fields(store):
    store.create_run(make_run())
    updated = store.update_run("r1", recipients_total=7, note="data as of 06:00")
    assert updated.recipients_total == 7 and updated.note == "data as of 06:00"
    assert updated.status == RunStatus.PENDING
    assert store.get_run("r1") == updated
    assert store.update_run("missing", note="x") is None


def _page_all(list_page, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor, pages = None, 0
    while True:
        page = list_page(limit=limit, cursor=cursor)
        pages += 1
        assert len(page.items) <= limit
        ids += [item.id for item in page.items]
        if page.next_cursor is None:
            return ids, pages
        cursor = page.next_cursor
        assert pages < 10, "paging does not end"


def test_list_runs_newest_first_pages_through_everything_once(store):
    # 25 distinct instants, 10 runs each: ties on created_at are broken by id.
    runs = [make_run(f"r{i:03d}", at=NOW + timedelta(minutes=i % 25)) for i in range(250)]
    for run in runs:
        assert store.create_run(run)
    expected = [r.id for r in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]

    ids, pages = _page_all(store.list_runs, limit=100)
    assert ids == expected
    assert pages == 3
    assert [r.id for r in store.list_runs(limit=3).items] == expected[:3]


def test_list_runs_filters(store):
    store.create_run(make_run("r1", "board-pack", NOW))
    store.create_run(make_run("r2", "sales", NOW + timedelta(seconds=1)))
    store.create_run(make_run("r3", "board-pack", NOW + timedelta(seconds=2)))
    store.transition_run("r3", [RunStatus.PENDING], RunStatus.FAILED)

    assert [r.id for r in store.list_runs(report_id="board-pack").items] == ["r3", "r1"]
    assert [r.id for r in store.list_runs(status=RunStatus.PENDING).items] == ["r2", "r1"]
    assert [r.id for r in store.list_runs(report_id="board-pack", status=RunStatus.FAILED).items] == ["r3"]
    assert store.list_runs(report_id="nothing").items == []
    assert store.list_runs(report_id="nothing").next_cursor is None


# Deliveries ------------------------------------------------------------------------------
def test_create_deliveries_counts_only_new_ones(store):
    first = [make_delivery("d1", recipient="a@example.com"), make_delivery("d2", recipient="b@example.com")]
    assert store.create_deliveries(first) == 2
    more = [*first, make_delivery("d3", recipient="c@example.com")]
    assert store.create_deliveries(more) == 1
    assert store.create_deliveries(more) == 0
    assert store.create_deliveries([make_delivery("d4"), make_delivery("d4")]) == 1
    assert store.create_deliveries([]) == 0
    assert store.get_delivery("d1") == first[0]
    assert store.get_delivery("missing") is None


def test_create_deliveries_in_bulk(store):
    deliveries = [make_delivery(f"d{i:04d}", recipient=f"u{i}@example.com") for i in range(1200)]
    assert store.create_deliveries(deliveries[:700]) == 700
    assert store.create_deliveries(deliveries) == 500
    assert store.delivery_counts("r1") == {"queued": 1200}


def test_delivery_round_trips_exactly(store):
    d = make_delivery(
        recipient="Mixed.Case@Example.com",
        next_attempt_at=NOW + timedelta(microseconds=1),
        link_token="tok-1",
        events={"opened": {"first": "2026-11-02T07:05:00Z", "count": 2}},
    )
    store.create_deliveries([d])
    stored = store.get_delivery("d1")
    assert stored == d
    assert_utc(stored.next_attempt_at)


@pytest.mark.parametrize("status", [DeliveryStatus.QUEUED, DeliveryStatus.RETRYING])
def test_claim_waiting_delivery_when_due(store, status):
    store.create_deliveries(
        [
            make_delivery("now", status=status),
            make_delivery("due", status=status, next_attempt_at=NOW),
            make_delivery("later", status=status, next_attempt_at=NOW + timedelta(microseconds=1)),
        ]
    )
    for delivery_id in ("now", "due"):
        claimed = store.claim_delivery(delivery_id, NOW, NOW + LEASE)
        assert claimed is not None
        assert claimed.status == DeliveryStatus.SENDING
        assert claimed.attempts == 1
        assert claimed.lease_until == NOW + LEASE
        assert claimed.updated_at == NOW
        assert store.get_delivery(delivery_id) == claimed
    assert store.claim_delivery("later", NOW, NOW + LEASE) is None
    assert store.get_delivery("later").status == status


def test_claimed_delivery_is_not_claimable_until_its_lease_expires(store):
    store.create_deliveries([make_delivery()])
    assert store.claim_delivery("d1", NOW, NOW + LEASE).attempts == 1
    assert store.claim_delivery("d1", NOW, NOW + LEASE) is None
    assert store.claim_delivery("d1", NOW + LEASE - timedelta(microseconds=1), NOW + 2 * LEASE) is None

    taken_over = store.claim_delivery("d1", NOW + LEASE, NOW + 2 * LEASE)
    assert taken_over is not None
    assert taken_over.attempts == 2 and taken_over.lease_until == NOW + 2 * LEASE
    assert store.get_delivery("d1").attempts == 2


@pytest.mark.parametrize("status", sorted(set(DeliveryStatus) - DELIVERY_CLAIMABLE))
def test_other_statuses_are_never_claimable(store, status):
    store.create_deliveries([make_delivery(status=status)])
    assert store.claim_delivery("d1", NOW + timedelta(days=1), NOW + timedelta(days=2)) is None
    assert store.get_delivery("d1").attempts == 0
    assert store.claim_delivery("missing", NOW, NOW + LEASE) is None


def race_claims(stores: Sequence[Any], delivery_id: str, now: datetime) -> list[Delivery | None]:
    """Each store claims ``delivery_id`` at ``now`` on its own thread, released together."""
    barrier = threading.Barrier(len(stores))
    results: list[Delivery | None] = [None] * len(stores)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = stores[index].claim_delivery(delivery_id, now, now + LEASE)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    return results


def test_two_workers_race_for_a_delivery_and_exactly_one_wins(open_store):
    stores = [open_store(), open_store()]  # two real connections / clients
    ids = [f"d{i}" for i in range(3)]  # each interleaved race costs the emulator ~2 s of lock wait
    stores[0].create_deliveries([make_delivery(i, recipient=f"{i}@example.com") for i in ids])

    for delivery_id in ids:
        results = race_claims(stores, delivery_id, NOW)
        assert sum(r is not None for r in results) == 1, f"{delivery_id}: {results}"
        assert stores[0].get_delivery(delivery_id).attempts == 1


def test_transition_delivery_is_compare_and_swap(store):
    store.create_deliveries([make_delivery()])
    store.claim_delivery("d1", NOW, NOW + LEASE)
    sent_at = NOW + timedelta(seconds=3, microseconds=5)
    # An allowed edge from a state it is not in: the compare fails and nothing is written.
    assert store.transition_delivery("d1", [DeliveryStatus.RETRYING], DeliveryStatus.FAILED) is None
    # An edge the domain's table does not list is a bug, refused loudly (one source of truth).
    with pytest.raises(InvalidTransition):
        store.transition_delivery("d1", [DeliveryStatus.QUEUED], DeliveryStatus.SENT)
    assert store.get_delivery("d1").status == DeliveryStatus.SENDING

    sent = store.transition_delivery(
        "d1",
        [DeliveryStatus.SENDING],
        DeliveryStatus.SENT,
        provider_message_id="msg-1",
        delivered_at=sent_at,
        lease_until=None,
        updated_at=sent_at,
    )
    assert sent.status == DeliveryStatus.SENT
    assert sent.provider_message_id == "msg-1" and sent.delivered_at == sent_at and sent.lease_until is None
    assert sent.attempts == 1
    assert store.get_delivery("d1") == sent
    assert store.transition_delivery("d1", [DeliveryStatus.SENDING], DeliveryStatus.FAILED) is None
    assert store.transition_delivery("missing", [DeliveryStatus.QUEUED], DeliveryStatus.SENDING) is None


def test_update_delivery_sets_fields(store):
    store.create_deliveries([make_delivery()])
    updated = store.update_delivery("d1", events={"downloads": 2}, last_error="x")
    assert updated.events == {"downloads": 2} and updated.last_error == "x"
    assert updated.status == DeliveryStatus.QUEUED
    assert store.get_delivery("d1") == updated
    assert store.update_delivery("missing", last_error="x") is None


def test_list_deliveries_oldest_first_pages_through_everything_once(store):
    deliveries = [
        make_delivery(f"d{i:03d}", recipient=f"u{i}@example.com", at=NOW + timedelta(seconds=i % 25))
        for i in range(250)
    ]
    assert store.create_deliveries(deliveries) == 250
    expected = [d.id for d in sorted(deliveries, key=lambda d: (d.created_at, d.id))]

    ids, pages = _page_all(lambda **kw: store.list_deliveries(run_id="r1", **kw), limit=100)
    assert ids == expected
    assert pages == 3
    ids, _ = _page_all(store.list_deliveries, limit=100)
    assert ids == expected


def test_list_deliveries_filters(store):
    store.create_deliveries(
        [
            make_delivery("d1", "r1", "Ann@Example.com", NOW),
            make_delivery("d2", "r1", "bob@example.com", NOW + timedelta(seconds=1)),
            make_delivery("d3", "r2", "ann@example.com", NOW + timedelta(seconds=2), report_id="sales"),
        ]
    )
    store.claim_delivery("d2", NOW, NOW + LEASE)

    def ids(**filters) -> list[str]:
        return [d.id for d in store.list_deliveries(**filters).items]

    assert ids(run_id="r1") == ["d1", "d2"]
    assert ids(report_id="sales") == ["d3"]
    assert ids(status=DeliveryStatus.SENDING) == ["d2"]
    assert ids(run_id="r1", status=DeliveryStatus.QUEUED) == ["d1"]
    assert ids(recipient="ANN@example.com") == ["d1", "d3"]
    assert ids(recipient="ann@example.com", report_id="board-pack") == ["d1"]
    assert ids(run_id="r3") == []


@pytest.mark.parametrize("status", sorted(DELIVERY_OPEN))
def test_has_open_deliveries(store, status):
    closed = [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED, DeliveryStatus.BOUNCED]
    store.create_deliveries(
        [make_delivery(f"c{i}", recipient=f"c{i}@example.com", status=s) for i, s in enumerate(closed)]
        + [make_delivery("other-run", run_id="r2", status=DeliveryStatus.QUEUED)]
    )
    assert store.has_open_deliveries("r1") is False
    store.create_deliveries([make_delivery("open", status=status)])
    assert store.has_open_deliveries("r1") is True
    assert store.has_open_deliveries("r3") is False


def test_delivery_counts_by_status(store):
    statuses = [DeliveryStatus.SENT] * 3 + [DeliveryStatus.FAILED] * 2 + [DeliveryStatus.QUEUED]
    store.create_deliveries(
        [make_delivery(f"d{i}", recipient=f"u{i}@example.com", status=s) for i, s in enumerate(statuses)]
        + [make_delivery("x", run_id="r2", status=DeliveryStatus.BOUNCED)]
    )
    assert store.delivery_counts("r1") == {"sent": 3, "failed": 2, "queued": 1}
    assert store.delivery_counts("r2") == {"bounced": 1}
    assert store.delivery_counts("r3") == {}


def test_delivery_by_link_token_and_by_message_id(store):
    store.create_deliveries(
        [
            make_delivery("d1", recipient="a@example.com", link_token="tok-a"),
            make_delivery("d2", recipient="b@example.com", link_token="tok-b"),
        ]
    )
    assert store.get_delivery_by_token("tok-b").id == "d2"
    assert store.get_delivery_by_token("tok-zzz") is None
    assert store.find_delivery_by_message_id("msg-1") is None
    store.claim_delivery("d1", NOW, NOW + LEASE)
    store.transition_delivery("d1", [DeliveryStatus.SENDING], DeliveryStatus.SENT, provider_message_id="msg-1")
    assert store.find_delivery_by_message_id("msg-1").id == "d1"


# Alerts ----------------------------------------------------------------------------------
def test_alerts_are_idempotent_and_listed_newest_first(store):
    assert store.add_alert(make_alert("a1", NOW)) is True
    assert store.add_alert(make_alert("a1", NOW + timedelta(hours=1))) is False
    assert store.get_alert("a1") == make_alert("a1", NOW)
    assert store.get_alert("missing") is None
    store.add_alert(make_alert("a2", NOW + timedelta(seconds=1), report_id="sales"))
    store.add_alert(make_alert("a3", NOW + timedelta(seconds=2), report_id=None))

    assert [a.id for a in store.list_alerts()] == ["a3", "a2", "a1"]
    assert [a.id for a in store.list_alerts(limit=2)] == ["a3", "a2"]
    assert [a.id for a in store.list_alerts(report_id="board-pack")] == ["a1"]

    # A channel's outcome and "sent" are one conditional write (services/notifications.py).
    assert store.mutate_alert("a1", lambda a: {"sent": True}).sent is True
    assert store.get_alert("a1").sent is True
    assert store.mutate_alert("missing", lambda a: {"sent": True}) is None  # nothing to change: None


# Event de-duplication --------------------------------------------------------------------
def test_remember_events_returns_only_new_ids(store):
    assert store.remember_events("sendgrid", ["e1", "e2", "e1"], NOW) == {"e1", "e2"}
    assert store.remember_events("sendgrid", ["e2", "e3", "e3"], NOW) == {"e3"}
    assert store.remember_events("sendgrid", ["e1", "e2", "e3"], NOW) == set()
    assert store.remember_events("sendgrid", [], NOW) == set()
    # Kinds are separate namespaces: a provider event id may equal a trigger id.
    assert store.remember_events("trigger", ["e1"], NOW) == {"e1"}


def test_inbound_event_documents_are_kept_once(store):
    assert store.get_inbound_event("trigger:crm", "e1") is None
    doc = {"digest": "abc", "run_ids": ["r1", "r2"], "received_at": NOW.isoformat()}
    assert store.put_inbound_event("trigger:crm", "e1", doc, NOW) is True
    assert store.put_inbound_event("trigger:crm", "e1", {"digest": "other", "run_ids": []}, NOW) is False
    assert store.get_inbound_event("trigger:crm", "e1") == doc
    assert store.get_inbound_event("trigger:erp", "e1") is None  # ids are per kind


def test_remember_events_in_bulk(store):
    ids = [f"sg-{i}" for i in range(300)]
    assert store.remember_events("sendgrid", ids[:100], NOW) == set(ids[:100])
    assert store.remember_events("sendgrid", ids, NOW) == set(ids[100:])


# Suppressions ----------------------------------------------------------------------------
def test_suppressions_by_report_and_global(store):
    assert store.find_suppression("a@example.com", "board-pack") is None
    report_scoped = Suppression("a@example.com", "board-pack", "unsubscribe", NOW)
    assert store.add_suppression(report_scoped) is True
    assert store.add_suppression(report_scoped) is False
    assert store.find_suppression("A@Example.com", "board-pack") == report_scoped
    assert store.find_suppression("a@example.com", "sales") is None

    everywhere = Suppression("a@example.com", "*", "bounce", NOW + timedelta(seconds=1))
    assert store.add_suppression(everywhere) is True
    assert store.find_suppression("a@example.com", "sales") == everywhere
    assert store.find_suppression("a@example.com", "board-pack") == report_scoped  # the report's own first
    assert store.list_suppressions() == [everywhere, report_scoped]
    assert store.list_suppressions(limit=1) == [everywhere]

    assert store.lift_suppression("A@example.com", "board-pack") is True
    assert store.lift_suppression("a@example.com", "board-pack") is False
    assert store.find_suppression("a@example.com", "board-pack") == everywhere
    assert store.lift_suppression("a@example.com", "*") is True
    assert store.find_suppression("a@example.com", "board-pack") is None


def test_suppression_recipients_are_stored_lower_case(store):
    store.add_suppression(Suppression("Mixed@Example.COM", "*", "manual", NOW))
    assert store.find_suppression("mixed@example.com", "any").recipient == "mixed@example.com"


# Job status ------------------------------------------------------------------------------
def test_job_status_put_once_get(store):
    record = {"finished_at": "2026-11-02T05:00:00+00:00", "rows": 1200, "source": "warehouse"}
    assert store.get_job_status("etl", "2026-11-01") is None
    assert store.put_job_status("etl", "2026-11-01", record) is True
    assert store.put_job_status("etl", "2026-11-01", {"rows": 1}) is False
    assert store.get_job_status("etl", "2026-11-01") == record
    assert store.get_job_status("etl", "2026-11-02") is None
    assert store.get_job_status("other", "2026-11-01") is None


def test_suppressed_among_finds_report_and_global_suppressions(store):
    from herald.ports.store import Suppression

    store.add_suppression(Suppression("a@example.com", "board-pack", "bounce", NOW))
    store.add_suppression(Suppression("b@example.com", "*", "spamreport", NOW))
    store.add_suppression(Suppression("c@example.com", "other-report", "unsubscribe", NOW))
    people = ["A@example.com", "b@example.com", "c@example.com", "d@example.com"] + [
        f"user{i}@example.com" for i in range(70)
    ]
    assert store.suppressed_among(people, "board-pack") == {"a@example.com", "b@example.com"}
    assert store.suppressed_among([], "board-pack") == set()


def test_mutate_delivery_is_atomic_under_concurrency(open_store):
    first = open_store()
    first.create_deliveries([make_delivery("d1")])

    def bump(d):
        downloads = dict(d.events.get("downloads") or {})
        downloads["count"] = int(downloads.get("count", 0)) + 1
        return {"events": {**d.events, "downloads": downloads}}

    stores = [first, open_store()]
    barrier = threading.Barrier(2)

    def worker(s):
        barrier.wait()
        for _ in range(5):
            s.mutate_delivery("d1", bump)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.get_delivery("d1").events["downloads"]["count"] == 10
    assert first.mutate_delivery("d1", lambda d: None) is None  # the change declined: nothing written
    assert first.get_delivery("d1").events["downloads"]["count"] == 10
    assert first.mutate_delivery("missing", bump) is None


def test_apply_delivery_events_applies_each_event_once(store):
    store.create_deliveries([make_delivery("d1"), make_delivery("d2", recipient="b@example.com")])

    def fold(d, events):
        return {"events": {**d.events, "seen": [*d.events.get("seen", []), *events]}}

    batch = {
        "d1": [("e1", "delivered"), ("e2", "open"), ("e2", "open")],
        "d2": [("e3", "bounce")],
        "nope": [("e4", "x")],
    }
    out = store.apply_delivery_events("sendgrid", batch, NOW, fold)
    assert set(out) == {"d1", "d2"}
    assert out["d1"][1] == ["e1", "e2"] and out["d1"][0].events["seen"] == ["delivered", "open"]
    again = store.apply_delivery_events("sendgrid", {"d1": [("e1", "delivered"), ("e5", "click")]}, NOW, fold)
    assert again["d1"][1] == ["e5"]
    assert store.get_delivery("d1").events["seen"] == ["delivered", "open", "click"]
    # SendGrid retrying the whole batch applies nothing twice.
    replay = store.apply_delivery_events("sendgrid", batch, NOW, fold)
    assert {d: fresh for d, (_, fresh) in replay.items()} == {"d1": [], "d2": []}
    assert store.get_delivery("d1").events["seen"] == ["delivered", "open", "click"]
    assert store.get_delivery("d2").events["seen"] == ["bounce"]
    # The unknown delivery's event was not recorded as applied: once it exists, the event applies.
    store.create_deliveries([make_delivery("nope", recipient="n@example.com")])
    assert store.apply_delivery_events("sendgrid", {"nope": [("e4", "x")]}, NOW, fold)["nope"][1] == ["e4"]


def test_an_outcome_after_a_claim_keeps_what_another_writer_changed_between(open_store):
    """A send's outcome starts from what its claim wrote (the embedded store remembers it,
    issue 14); a change another process made in between must survive, and a delivery
    another process moved on must refuse the outcome."""
    sender, other = open_store(), open_store()
    sender.create_deliveries([make_delivery("d1"), make_delivery("d2", recipient="b@example.com")])
    for delivery_id in ("d1", "d2"):
        assert sender.claim_delivery(delivery_id, NOW, NOW + LEASE) is not None
    other.mutate_delivery("d1", lambda d: {"events": {**d.events, "processed": "2026-12-03T09:00:00Z"}})
    other.transition_delivery("d2", [DeliveryStatus.SENDING], DeliveryStatus.FAILED, last_error="taken over")

    sent = sender.transition_delivery("d1", [DeliveryStatus.SENDING], DeliveryStatus.SENT, provider_message_id="m1")
    assert sent is not None and sent.events.get("processed") == "2026-12-03T09:00:00Z"
    stored = other.get_delivery("d1")
    assert stored.status == DeliveryStatus.SENT and stored.events.get("processed") == "2026-12-03T09:00:00Z"
    assert sender.transition_delivery("d2", [DeliveryStatus.SENDING], DeliveryStatus.SENT) is None
    assert other.get_delivery("d2").status == DeliveryStatus.FAILED
