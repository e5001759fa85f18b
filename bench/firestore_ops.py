"""Firestore operations per delivery, and what they cost, over a 1,000-recipient run.

Two measurements against Google's Firestore emulator, counted by the store itself
(``FirestoreStore.op_counts``, billed the way Google bills them):

- ``pipeline``: Herald's real services on the gcp store — tick, execute (render +
  fan-out), one send task per recipient, finish — with a null mailer and the tasks run
  by hand, so every store call the pipeline makes is counted, by phase; then SendGrid's
  usual three events per delivery (processed, delivered, open), signed, posted in batches
  to the real ``/webhooks/sendgrid`` route, as SendGrid would.
- ``core``: only the calls a delivery cannot do without (create run, run transitions,
  create deliveries; per delivery claim + mark sent + "any open left?"), the floor.

Costs use Google's public Firestore Standard edition prices per 100,000 operations
(https://cloud.google.com/firestore/pricing, "Pricing by location"): multi-region
nam5 / eur3 $0.06 reads, $0.18 writes, $0.02 deletes; regional (e.g. us-west1 Oregon)
$0.03 / $0.09 / $0.01. Free quota, storage, TTL deletes and network are left out.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.sendgrid_events import EventSigner, event

RECIPIENTS = 1_000
EVENT_BATCH = 300  # events per webhook POST (SendGrid batches by size and time; ~100s is usual)
SIGNER = EventSigner()
SEND_THREADS = 8  # the sends run side by side as a worker would; counts do not depend on it
SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
PRICES = {  # USD per 100,000 operations
    "multi_region": {"reads": 0.06, "writes": 0.18, "deletes": 0.02},
    "regional_us_west1": {"reads": 0.03, "writes": 0.09, "deletes": 0.01},
}


def _cost_per_1000(per_delivery: dict[str, float]) -> dict[str, float]:
    return {
        name: round(sum(per_delivery[op] * 1000 * price / 100_000 for op, price in table.items()), 5)
        for name, table in PRICES.items()
    }


def _summary(phases: dict[str, dict[str, int]], deliveries: int) -> dict[str, Any]:
    total = {op: sum(p[op] for p in phases.values()) for op in ("reads", "writes", "deletes", "queries")}
    per = {op: round(total[op] / deliveries, 3) for op in ("reads", "writes", "deletes")}
    out = {
        "phases": phases,
        "total": total,
        "per_delivery": per,
        "usd_per_1000_deliveries": _cost_per_1000(per),
    }
    if "provider_events" in phases:  # the send path alone, and what the events add
        send = {
            op: sum(p[op] for k, p in phases.items() if k != "provider_events") for op in ("reads", "writes", "deletes")
        }
        send_per = {op: round(n / deliveries, 3) for op, n in send.items()}
        events_per = {op: round(phases["provider_events"][op] / deliveries, 3) for op in ("reads", "writes", "deletes")}
        out |= {
            "send_path_per_delivery": send_per,
            "send_path_usd_per_1000": _cost_per_1000(send_per),
            "events_per_delivery": events_per,
        }
    return out


def _pipeline(store: Any, recipients: int) -> dict[str, Any]:
    from herald.adapters.embedded.outbox import NullMailer
    from herald.bootstrap import build_embedded_container
    from herald.domain.reports import ReportDefinition
    from herald.domain.states import DeliveryStatus
    from herald.ports.clock import FakeClock
    from herald.services import delivery, runs
    from herald.services.scheduling import apply_definitions, tick
    from herald.services.tasks import EXECUTE_RUN, FINISH_RUN, SEND_DELIVERY
    from herald.settings import Settings
    from tests.fakes import RecordingQueue

    clock = FakeClock(SLOT - timedelta(minutes=1))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), secret_key="bench", log_level="WARNING", sendgrid_webhook_public_key=SIGNER.public_key
        )
        c = build_embedded_container(settings, clock)
        queue = RecordingQueue()
        c.store, c.queue, c.mailer = store, queue, NullMailer()
        report = ReportDefinition.model_validate(
            {
                "id": "bench",
                "name": "Bench",
                "owner": "owner@example.com",
                "schedule": {"cron": "0 7 * * *", "timezone": "UTC"},
                "source": {"type": "pdf", "data": {"columns": ["a"], "rows": [[1]]}},
                "recipients": {"email": [f"user{i:05d}@example.com" for i in range(recipients)]},
            }
        )
        apply_definitions(c, [report])
        clock.set(SLOT)
        phases: dict[str, dict[str, int]] = {}

        def phase(name: str, work: Callable[[], object]) -> None:
            store.op_counts.reset()
            work()
            phases[name] = store.op_counts.as_dict()

        def run_tasks(path: str, handler: Callable[[str], object], key: str, threads: int = 1) -> None:
            tasks = queue.take_due(clock.now(), path)
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(lambda t: handler(t.payload[key]), tasks))

        phase("tick", lambda: tick(c))
        phase("execute_run", lambda: run_tasks(EXECUTE_RUN, lambda r: runs.execute_run(c, r), "run_id"))
        phase(
            "send",
            lambda: run_tasks(SEND_DELIVERY, lambda d: delivery.send_delivery(c, d), "delivery_id", SEND_THREADS),
        )
        phase("finish_run", lambda: run_tasks(FINISH_RUN, lambda r: runs.finish_run(c, r), "run_id"))
        (run,) = store.list_runs(report_id="bench").items
        sent = store.list_deliveries(run_id=run.id, status=DeliveryStatus.SENT, limit=recipients).items
        phases["provider_events"] = _webhook(c, store, sent, clock.now())
        final = store.get_run(run.id)
        return {
            "run_status": str(final.status),
            "statuses": store.delivery_counts(run.id),
            **_summary(phases, recipients),
        }


def _webhook(c: Any, store: Any, sent: list[Any], now: datetime) -> dict[str, int]:
    """SendGrid's usual three events per delivery (processed, delivered, open), posted to the
    real ``/webhooks/sendgrid`` route, signed, in batches as SendGrid sends them."""
    from herald.web.app import create_app

    client = create_app(c).test_client()
    events = [
        event(kind, d, now + timedelta(seconds=k), message_id=d.provider_message_id)
        for d in sent
        for k, kind in enumerate(("processed", "delivered", "open"))
    ]
    store.op_counts.reset()
    for i in range(0, len(events), EVENT_BATCH):
        body, headers = SIGNER.signed(events[i : i + EVENT_BATCH], int(c.clock.now().timestamp()))
        response = client.post("/webhooks/sendgrid", data=body, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"/webhooks/sendgrid answered {response.status_code}: {response.get_data(as_text=True)}")
    counts: dict[str, int] = store.op_counts.as_dict()
    return counts


def _core(store: Any, recipients: int) -> dict[str, Any]:
    from herald.domain.records import Delivery, Run
    from herald.domain.states import DeliveryStatus, RunStatus

    now = SLOT
    store.op_counts.reset()
    run = Run(id="core-run", report_id="bench", trigger="schedule", slot=now, created_at=now, updated_at=now)
    store.create_run(run)
    store.transition_run(run.id, [RunStatus.PENDING], RunStatus.RENDERING)
    store.transition_run(run.id, [RunStatus.RENDERING], RunStatus.DELIVERING)
    store.create_deliveries(
        [
            Delivery(
                id=f"core-{i:05d}",
                run_id=run.id,
                report_id="bench",
                channel="email",
                recipient=f"user{i:05d}@example.com",
                created_at=now,
                updated_at=now,
            )
            for i in range(recipients)
        ]
    )
    run_phase = store.op_counts.as_dict()

    def deliver(i: int) -> None:
        delivery_id = f"core-{i:05d}"
        store.claim_delivery(delivery_id, now, now + timedelta(minutes=2))
        store.transition_delivery(delivery_id, [DeliveryStatus.SENDING], DeliveryStatus.SENT, lease_until=None)
        store.has_open_deliveries(run.id)

    store.op_counts.reset()
    with ThreadPoolExecutor(max_workers=SEND_THREADS) as pool:
        list(pool.map(deliver, range(recipients)))
    per_delivery_phase = store.op_counts.as_dict()
    return _summary({"run": run_phase, "deliveries": per_delivery_phase}, recipients)


def run(recipients: int = RECIPIENTS) -> dict[str, Any]:
    from herald.adapters.gcp.firestore_store import FirestoreStore
    from tests.support.emulators import run_firestore_emulator

    with run_firestore_emulator() as emulator:
        results = {}
        runs: list[tuple[str, Any, dict[str, Any]]] = [
            ("pipeline", _pipeline, {}),
            # Events de-duplicated on the delivery document (one read + one write per delivery
            # a batch touches): not the default, see firestore_store.py / firestore_docs.py.
            ("pipeline_inline_event_dedup", _pipeline, {"inline_event_dedup": True}),
            ("core", _core, {}),
        ]
        for name, measure, options in runs:
            client = emulator.client()
            try:
                results[name] = measure(FirestoreStore(client, prefix=f"{name}-", **options), recipients)
            finally:
                client.close()
    return {
        "name": "firestore_ops",
        "recipients": recipients,
        "prices_usd_per_100k": PRICES,
        **results,
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else RECIPIENTS), indent=2))
