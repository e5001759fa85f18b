"""Firestore operations per delivery, and what they cost, over a 1,000-recipient run.

Two measurements against Google's Firestore emulator, counted by the store itself
(``FirestoreStore.op_counts``, billed the way Google bills them):

- ``pipeline``: Herald's real services on the gcp store — tick, execute (render +
  fan-out), one send task per recipient, finish — with a null mailer and the tasks run
  by hand, so every store call the pipeline makes is counted, by phase; then SendGrid's
  usual three events per delivery (processed, delivered, open), signed, posted in batches
  to the real ``/webhooks/sendgrid`` route, as SendGrid would. One store instance plays
  every role, as one worker process would (a send task's claim and outcome run on the
  same instance in production too: the task is one request).
- ``core``: only the calls a delivery cannot do without (create run, run transitions,
  create deliveries; per delivery claim + mark sent, and "any open left?" after each one
  where the store writes deliveries at the fan-out, once where its finish polls), the floor.

``headline`` says it in the terms of issue 14's target (at most 2 reads and 2 writes per
send task; at most 1 read + 1 write per delivery per SendGrid event batch): per send
task, per delivery including the fan-out and the run's own writes, events per delivery,
and USD per 1,000 deliveries at multi-region and regional prices.

Costs use Google's public Firestore Standard edition prices per 100,000 operations
(https://cloud.google.com/firestore/pricing, "Pricing by location"): multi-region
nam5 / eur3 $0.06 reads, $0.18 writes, $0.02 deletes; regional (e.g. us-west1 Oregon)
$0.03 / $0.09 / $0.01. Free quota, storage, TTL deletes and network are left out.

``all_in`` adds what the same run costs outside Firestore, counted in the same run (the
tasks the services enqueue, the tasks dispatched, the webhook POSTs), as issue 14's own
figure of $0.0095 did: Cloud Tasks bills $0.40 per million operations, an operation being
an API call or a push delivery attempt (https://cloud.google.com/tasks/pricing), so a task
costs two; Cloud Run bills $0.40 per million requests (request-based billing, tier 1,
https://cloud.google.com/run/pricing), one per dispatched task and per webhook POST. The
instance time those requests take is left out, like the free tiers.
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
OPS = ("reads", "writes", "deletes")
PRICES = {  # USD per 100,000 operations
    "multi_region": {"reads": 0.06, "writes": 0.18, "deletes": 0.02},
    "regional_us_west1": {"reads": 0.03, "writes": 0.09, "deletes": 0.01},
}


TASK_OPERATION_USD = 0.40 / 1_000_000  # Cloud Tasks, per billable operation (create, push attempt)
RUN_REQUEST_USD = 0.40 / 1_000_000  # Cloud Run, per request


def _all_in(firestore: dict[str, float], requests: dict[str, int], deliveries: int) -> dict[str, float]:
    """Firestore's cost per 1,000 deliveries plus Cloud Tasks' and Cloud Run's for ``requests``."""
    tasks = (requests["tasks_created"] + requests["tasks_dispatched"]) * TASK_OPERATION_USD
    run = (requests["tasks_dispatched"] + requests["webhook_posts"]) * RUN_REQUEST_USD
    extra = (tasks + run) * 1000 / deliveries
    return {name: round(usd + extra, 5) for name, usd in firestore.items()}


def _cost_per_1000(per_delivery: dict[str, float]) -> dict[str, float]:
    return {
        name: round(sum(per_delivery[op] * 1000 * price / 100_000 for op, price in table.items()), 5)
        for name, table in PRICES.items()
    }


def _per(counts: dict[str, int], n: int) -> dict[str, float]:
    return {op: round(counts[op] / n, 3) for op in OPS}


def _headline(
    phases: dict[str, dict[str, int]], deliveries: int, send_tasks: int, requests: dict[str, int]
) -> dict[str, Any]:
    send_path = {op: sum(p[op] for k, p in phases.items() if k != "provider_events") for op in OPS}
    events = phases["provider_events"]
    everything = {op: send_path[op] + events[op] for op in OPS}
    send_usd = _cost_per_1000(_per(send_path, deliveries))
    total_usd = _cost_per_1000(_per(everything, deliveries))
    return {
        "per_send_task": _per(phases["send"], send_tasks),
        "per_delivery_including_fan_out": _per(send_path, deliveries),
        "events_per_delivery": _per(events, deliveries),
        "requests": requests,
        "usd_per_1000_deliveries": {
            "send_path": send_usd,
            "events": _cost_per_1000(_per(events, deliveries)),
            "total": total_usd,
        },
        "usd_per_1000_deliveries_all_in": {
            "send_path": _all_in(send_usd, {**requests, "webhook_posts": 0}, deliveries),
            "total": _all_in(total_usd, requests, deliveries),
        },
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
    from herald.domain.records import Delivery
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

        ran: dict[str, int] = {}

        def run_tasks(path: str, handler: Callable[[dict[str, Any]], object], threads: int = 1) -> int:
            tasks = queue.take_due(clock.now(), path)
            ran[path] = ran.get(path, 0) + len(tasks)
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(lambda t: handler(t.payload), tasks))
            return len(tasks)

        def send(payload: dict[str, Any]) -> object:
            seed = payload.get("seed")  # as the task route reads it
            return delivery.send_delivery(c, payload["delivery_id"], Delivery.model_validate(seed) if seed else None)

        def finish_polls() -> None:
            # The finish task looks, and on a store with deferred deliveries looks again later
            # while deliveries are open: move the clock to each look (the sends are all done).
            while looks := [t for t in queue.pending if t.path == FINISH_RUN]:
                clock.set(max(clock.now(), min(t.eta or clock.now() for t in looks)))
                run_tasks(FINISH_RUN, lambda p: runs.finish_run(c, p["run_id"], p.get("polls", 0)))

        phase("tick", lambda: tick(c))
        phase("execute_run", lambda: run_tasks(EXECUTE_RUN, lambda p: runs.execute_run(c, p["run_id"])))
        phase("send", lambda: run_tasks(SEND_DELIVERY, send, SEND_THREADS))
        phase("finish_run", finish_polls)
        (run,) = store.list_runs(report_id="bench").items
        sent = store.list_deliveries(run_id=run.id, status=DeliveryStatus.SENT, limit=recipients).items
        phases["provider_events"], posts = _webhook(c, store, sent, clock.now())
        final = store.get_run(run.id)
        requests = {"tasks_created": len(queue.tasks), "tasks_dispatched": sum(ran.values()), "webhook_posts": posts}
        return {
            "headline": _headline(phases, recipients, ran[SEND_DELIVERY], requests),
            "run_status": str(final.status),
            "statuses": store.delivery_counts(run.id),
            "send_tasks": ran[SEND_DELIVERY],
            **_summary(phases, recipients),
        }


def _webhook(c: Any, store: Any, sent: list[Any], now: datetime) -> tuple[dict[str, int], int]:
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
    posts = 0
    for i in range(0, len(events), EVENT_BATCH):
        posts += 1
        body, headers = SIGNER.signed(events[i : i + EVENT_BATCH], int(c.clock.now().timestamp()))
        response = client.post("/webhooks/sendgrid", data=body, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"/webhooks/sendgrid answered {response.status_code}: {response.get_data(as_text=True)}")
    counts: dict[str, int] = store.op_counts.as_dict()
    return counts, posts


def _core(store: Any, recipients: int) -> dict[str, Any]:
    from herald.domain.records import Delivery, Run
    from herald.domain.states import DeliveryStatus, RunStatus

    now = SLOT
    store.op_counts.reset()
    run = Run(id="core-run", report_id="bench", trigger="schedule", slot=now, created_at=now, updated_at=now)
    store.create_run(run)
    store.transition_run(run.id, [RunStatus.PENDING], RunStatus.RENDERING)
    store.transition_run(run.id, [RunStatus.RENDERING], RunStatus.DELIVERING)
    fanned = [
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
    store.create_deliveries(fanned)
    run_phase = store.op_counts.as_dict()

    def deliver(i: int) -> None:
        delivery_id = f"core-{i:05d}"
        store.claim_delivery(delivery_id, now, now + timedelta(minutes=2), seed=fanned[i])
        store.transition_delivery(delivery_id, [DeliveryStatus.SENDING], DeliveryStatus.SENT, lease_until=None)
        if not store.deferred_deliveries:  # else the finish polls: once below
            store.has_open_deliveries(run.id)

    store.op_counts.reset()
    with ThreadPoolExecutor(max_workers=SEND_THREADS) as pool:
        list(pool.map(deliver, range(recipients)))
    if store.deferred_deliveries:
        store.has_open_deliveries(run.id)
    per_delivery_phase = store.op_counts.as_dict()
    return _summary({"run": run_phase, "deliveries": per_delivery_phase}, recipients)


def run(recipients: int = RECIPIENTS) -> dict[str, Any]:
    from herald.adapters.gcp.firestore_store import FirestoreStore
    from tests.support.emulators import run_firestore_emulator

    with run_firestore_emulator() as emulator:
        results = {}
        for name, measure in (("pipeline", _pipeline), ("core", _core)):
            client = emulator.client()
            try:
                results[name] = measure(FirestoreStore(client, prefix=f"{name}-"), recipients)
            finally:
                client.close()
    return {
        "name": "firestore_ops",
        "recipients": recipients,
        "prices_usd_per_100k": PRICES,
        **results,
    }


def report(results: dict[str, Any]) -> str:
    """The headline as text (the target of issue 14: <= 2 reads and 2 writes per send task,
    <= 1 read + 1 write per delivery per event batch)."""
    h = results["pipeline"]["headline"]

    def ops(counts: dict[str, float]) -> str:
        return f"{counts['reads']:.3f} reads, {counts['writes']:.3f} writes, {counts['deletes']:.3f} deletes"

    def usd(costs: dict[str, float]) -> str:
        return f"${costs['multi_region']:.5f} multi-region, ${costs['regional_us_west1']:.5f} regional"

    cost = h["usd_per_1000_deliveries"]
    return "\n".join(
        [
            f"Firestore operations, {results['recipients']:,}-recipient run (pipeline, real services and routes):",
            f"  per send task (claim, send, outcome):                  {ops(h['per_send_task'])}",
            f"  per delivery including fan-out, tick and finish:      {ops(h['per_delivery_including_fan_out'])}",
            f"  SendGrid events per delivery (3 events, batches of {EVENT_BATCH}): {ops(h['events_per_delivery'])}",
            "  USD per 1,000 deliveries, Firestore:",
            f"    send path: {usd(cost['send_path'])}",
            f"    events:    {usd(cost['events'])}",
            f"    total:     {usd(cost['total'])}",
            f"  with Cloud Tasks and Cloud Run requests ({h['requests']}):",
            f"    send path: {usd(h['usd_per_1000_deliveries_all_in']['send_path'])}",
            f"    total:     {usd(h['usd_per_1000_deliveries_all_in']['total'])}",
            f"  floor (core calls only), per delivery: {ops(results['core']['per_delivery'])}",
        ]
    )


if __name__ == "__main__":
    figures = run(int(sys.argv[1]) if len(sys.argv) > 1 else RECIPIENTS)
    print(report(figures), file=sys.stderr)
    print(json.dumps(figures, indent=2))
