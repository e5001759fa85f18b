"""Seeded delivery data for the admin tests, the browser tests and the benchmark: a report
whose last run settled partial (delivered, opened, clicked, downloaded, bounced, failed,
suppressed recipients) and an older run that succeeded."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from herald.domain import ids
from herald.domain.records import Delivery, Run
from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.store import Store, Suppression

REPORT = "board-pack"


def iso(t: datetime) -> str:
    return t.isoformat()


def delivery(run: Run, recipient: str, status: DeliveryStatus, at: datetime, **fields: Any) -> Delivery:
    return Delivery(
        id=ids.delivery_id(run.id, fields.pop("channel", "email"), recipient),
        run_id=run.id,
        report_id=run.report_id,
        channel="email",
        recipient=recipient,
        status=status,
        created_at=at,
        updated_at=at,
        **fields,
    )


def run(run_id: str, at: datetime, status: RunStatus, period: str, report_id: str = REPORT, **fields: Any) -> Run:
    return Run(
        id=run_id,
        report_id=report_id,
        trigger="schedule",
        status=status,
        slot=at,
        period=period,
        created_at=at,
        updated_at=at,
        started_at=at + timedelta(seconds=5),
        finished_at=at + timedelta(minutes=3) if status != RunStatus.DELIVERING else None,
        **fields,
    )


def seed(store: Store, now: datetime) -> dict[str, Any]:
    """Two runs of ``board-pack``; returns the ids the tests look for."""
    old = run("r-old", now - timedelta(days=1), RunStatus.SUCCEEDED, "2026-11-01", recipients_total=2)
    new = run("r-new", now - timedelta(hours=1), RunStatus.PARTIAL, "2026-11-02", recipients_total=7)
    store.create_run(old)
    store.create_run(new)
    t = new.created_at + timedelta(seconds=10)
    sent = t + timedelta(seconds=1)
    store.create_deliveries(
        [delivery(old, f"user{i}@example.com", DeliveryStatus.DELIVERED, old.created_at, attempts=1) for i in (1, 2)]
    )
    rows = [
        delivery(
            new,
            "ann@example.com",
            DeliveryStatus.DELIVERED,
            t,
            attempts=1,
            provider_message_id="m-ann",
            delivered_at=sent,
            events={
                "delivered_at": iso(sent + timedelta(seconds=4)),
                "opened_at": iso(sent + timedelta(minutes=12)),
                "opens_human": 2,
                "opens_machine": 1,
                "clicked_at": iso(sent + timedelta(minutes=13)),
                "clicks": 1,
                "downloads": {
                    "count": 2,
                    "first_at": iso(sent + timedelta(minutes=13)),
                    "last_at": iso(sent + timedelta(minutes=40)),
                },
            },
        ),
        delivery(
            new,
            "ben@example.com",
            DeliveryStatus.DELIVERED,
            t + timedelta(microseconds=1),
            attempts=1,
            provider_message_id="m-ben",
            delivered_at=sent,
            events={"delivered_at": iso(sent + timedelta(seconds=3)), "opens_machine": 1},
        ),
        delivery(
            new,
            "cat@example.com",
            DeliveryStatus.BOUNCED,
            t + timedelta(microseconds=2),
            attempts=1,
            provider_message_id="m-cat",
            delivered_at=sent,
            events={"bounced_at": iso(sent + timedelta(seconds=9)), "bounce_reason": "550 5.1.1 mailbox unknown"},
        ),
        delivery(
            new,
            "dan@example.com",
            DeliveryStatus.BOUNCED,
            t + timedelta(microseconds=3),
            attempts=1,
            provider_message_id="m-dan",
            delivered_at=sent,
            events={"bounced_at": iso(sent + timedelta(seconds=8)), "bounce_reason": "552 mailbox full"},
        ),
        delivery(
            new,
            "eve@example.com",
            DeliveryStatus.FAILED,
            t + timedelta(microseconds=4),
            attempts=4,
            last_error="gave up after 4 attempts: SendGrid 503",
            error_kind="transient",
        ),
        delivery(
            new,
            "fay@example.com",
            DeliveryStatus.FAILED,
            t + timedelta(microseconds=5),
            attempts=1,
            last_error="SendGrid 400: invalid to address",
            error_kind="permanent",
        ),
        delivery(new, "gus@example.com", DeliveryStatus.SUPPRESSED, t + timedelta(microseconds=6)),
    ]
    store.create_deliveries(rows)
    store.add_suppression(Suppression("gus@example.com", "*", "unsubscribe", now - timedelta(days=3)))
    return {
        "old_run": old.id,
        "run": new.id,
        "bounced": ["cat@example.com", "dan@example.com"],
        "failed": ["eve@example.com", "fay@example.com"],
    }
