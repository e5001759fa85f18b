"""The delivery report's first page with 50,000 delivery records, on the embedded backend.

One report, one run of 50,000 deliveries (mixed statuses and provider feedback), seeded
straight into the SQLite store in batches; then the page is requested through the Flask
test client: the default view (the latest run), filtered to bounced, all runs, and one
recipient. Each figure is the median of several requests after a warm-up. The full CSV
export is timed once. Target: the first page well under a second.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RECORDS = 50_000
BATCH = 5_000
REPEATS = 9
T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def _seed(c: Any) -> str:
    from herald.domain import ids
    from herald.domain.records import Delivery, Run
    from herald.domain.states import DeliveryStatus, RunStatus

    run = Run(
        id="r-bench",
        report_id="board-pack",
        trigger="schedule",
        status=RunStatus.PARTIAL,
        slot=T0,
        period="2026-11-02",
        created_at=T0,
        updated_at=T0,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=9),
        recipients_total=RECORDS,
    )
    c.store.create_run(run)
    cycle = (
        [DeliveryStatus.DELIVERED] * 14 + [DeliveryStatus.SENT] * 3 + [DeliveryStatus.BOUNCED, DeliveryStatus.FAILED]
    )
    for start in range(0, RECORDS, BATCH):
        batch = []
        for i in range(start, min(start + BATCH, RECORDS)):
            status = cycle[i % len(cycle)]
            at = T0 + timedelta(milliseconds=i)
            events: dict[str, Any] = {}
            if status == DeliveryStatus.DELIVERED:
                events = {"delivered_at": (at + timedelta(seconds=3)).isoformat(), "opens_human": i % 3}
            elif status == DeliveryStatus.BOUNCED:
                events = {"bounced_at": (at + timedelta(seconds=5)).isoformat(), "bounce_reason": "550 5.1.1 unknown"}
            recipient = f"user{i:05d}@example.com"
            batch.append(
                Delivery(
                    id=ids.delivery_id(run.id, "email", recipient),
                    run_id=run.id,
                    report_id=run.report_id,
                    channel="email",
                    recipient=recipient,
                    status=status,
                    attempts=1,
                    provider_message_id=None if status == DeliveryStatus.FAILED else f"m{i}",
                    delivered_at=None if status == DeliveryStatus.FAILED else at,
                    last_error="SendGrid 400" if status == DeliveryStatus.FAILED else "",
                    link_token=f"tok{i:010d}xxxxxxxxxxxx",
                    created_at=at,
                    updated_at=at,
                    events=events,
                )
            )
        c.store.create_deliveries(batch)
    return run.id


def _median_ms(client: Any, url: str) -> float:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return round(statistics.median(times), 1)


def run() -> dict[str, Any]:
    from herald.bootstrap import build_container
    from herald.domain.reports import ReportDefinition
    from herald.ports.clock import FakeClock
    from herald.services.scheduling import apply_definitions
    from herald.settings import Settings
    from herald.web.app import create_app
    from herald.web.security import OPEN_LOOPBACK

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), secret_key="bench-secret", log_level="WARNING")
        c = build_container(settings, clock=FakeClock(T0 + timedelta(hours=1)))
        definition = ReportDefinition.model_validate(
            {
                "id": "board-pack",
                "name": "Board pack",
                "owner": "cfo@example.com",
                "schedule": {"cron": "0 7 * * *", "timezone": "Europe/London"},
                "source": {"type": "pdf"},
                "recipients": {"email": ["a@example.com"]},
            }
        )
        apply_definitions(c, [definition])
        started = time.perf_counter()
        run_id = _seed(c)
        seed_s = time.perf_counter() - started
        app = create_app(c)
        app.config[OPEN_LOOPBACK] = "127.0.0.1"  # as `herald serve` on loopback: admin open to the test client
        client = app.test_client()
        base = "/admin/reports/board-pack"
        figures = {
            "records": RECORDS,
            "seed_seconds": round(seed_s, 2),
            "first_page_ms": _median_ms(client, base),
            "first_page_bounced_ms": _median_ms(client, f"{base}?status=bounced"),
            "first_page_delivered_ms": _median_ms(client, f"{base}?status=delivered"),
            "first_page_all_runs_ms": _median_ms(client, f"{base}?run=all&limit=200"),
            "one_recipient_ms": _median_ms(client, f"{base}?run={run_id}&recipient=user04321@example.com"),
        }
        started = time.perf_counter()
        body = client.get(f"{base}/deliveries.csv?run={run_id}").get_data()
        figures["csv_export_seconds"] = round(time.perf_counter() - started, 2)
        figures["csv_rows"] = body.count(b"\n") - 1
    for key, value in figures.items():
        print(f"  {key}: {value}")
    return figures


if __name__ == "__main__":
    run()
