"""A run's life: create once, render once, fan out one delivery per recipient, finish once."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from herald.bootstrap import Container
from herald.domain import ids
from herald.domain.errors import RenderError
from herald.domain.periods import period_label
from herald.domain.records import Delivery, Run, Trigger
from herald.domain.reports import ReportDefinition, render_summary
from herald.domain.states import DELIVERY_FAILED, DeliveryStatus, RunStatus, run_outcome
from herald.ports.sources import RenderRequest
from herald.ports.store import pages
from herald.services import alerts, dependencies, events, watchdog
from herald.services.tasks import execute_run_task, finish_run_task, send_task

log = logging.getLogger(__name__)

FANOUT_PAGE = 1000


class UnknownReport(LookupError):
    pass


def new_run(
    report: ReportDefinition,
    run_id: str,
    trigger: Trigger,
    now: datetime,
    *,
    slot: datetime | None = None,
    params: dict[str, str] | None = None,
    status: RunStatus = RunStatus.PENDING,
) -> Run:
    zone = report.schedule.timezone if report.schedule else "UTC"
    return Run(
        id=run_id,
        report_id=report.id,
        trigger=trigger,
        status=status,
        slot=slot,
        period=period_label(report.period, slot or now, zone),
        params=params or {},
        created_at=now,
        updated_at=now,
    )


def submit_run(c: Container, run: Run) -> tuple[Run, bool]:
    """Create the run once and queue its first step; a repeat returns the existing run."""
    created = c.store.create_run(run)
    if created:
        c.queue.enqueue(execute_run_task(run.id))
        log.info("run created", extra={"run_id": run.id, "report_id": run.report_id, "trigger": run.trigger})
    else:
        log.info("run exists already", extra={"run_id": run.id, "report_id": run.report_id})
    existing = c.store.get_run(run.id)
    assert existing is not None
    return existing, created


def start_manual_run(
    c: Container, report_id: str, params: dict[str, str] | None = None, request_id: str | None = None
) -> tuple[Run, bool]:
    stored = c.store.get_report(report_id)
    if stored is None:
        raise UnknownReport(report_id)
    run_id = ids.manual_run_id(report_id, request_id or uuid.uuid4().hex)
    return submit_run(c, new_run(stored.definition, run_id, "manual", c.clock.now(), params=params))


# The execute task ---------------------------------------------------------------------
def execute_run(c: Container, run_id: str) -> Run | None:
    """Advance a run as far as it can go now. Safe to call again at any point (redelivery)."""
    run = c.store.get_run(run_id)
    if run is None:
        return None
    stored = c.store.get_report(run.report_id)
    if stored is None:
        return c.store.transition_run(
            run_id,
            [RunStatus.PENDING, RunStatus.WAITING],
            RunStatus.FAILED,
            error="report definition was removed",
            finished_at=c.clock.now(),
        )
    report = stored.definition
    if run.status in (RunStatus.PENDING, RunStatus.WAITING):
        if report.depends_on:  # the dependency gate: wait, fail, skip, or go (maybe with a note)
            held = dependencies.hold(c, report, run)
            if held is not None:
                return held
        started = c.store.transition_run(
            run_id,
            [RunStatus.PENDING, RunStatus.WAITING],
            RunStatus.RENDERING,
            started_at=c.clock.now(),
            updated_at=c.clock.now(),
        )
        if started is not None and report.heartbeat_url:
            c.heartbeat.ping(report.heartbeat_url, "start", run_id)
        run = started or c.store.get_run(run_id) or run
    if run.status == RunStatus.RENDERING:
        run = render(c, report, run) or run
    if run.status == RunStatus.DELIVERING:
        fan_out(c, report, run)
    return run


def render(c: Container, report: ReportDefinition, run: Run) -> Run | None:
    summary = render_summary(report.summary, name=report.name, period=run.period, rows=0, params=run.params)
    request = RenderRequest(definition=report, run_id=run.id, period=run.period, params=run.params, summary=summary)
    try:
        rendered = c.source.render(request)
        if not rendered.data:
            raise RenderError("the source produced an empty report")
    except RenderError as exc:
        log.error("render failed", extra={"run_id": run.id, "report_id": report.id, "error": str(exc)})
        failed = c.store.transition_run(
            run.id,
            [RunStatus.RENDERING],
            RunStatus.FAILED,
            error=f"render failed: {exc}",
            finished_at=c.clock.now(),
            updated_at=c.clock.now(),
        )
        if failed is not None:
            c.queue.enqueue(finish_run_task(run.id))
        return failed
    summary = rendered.summary or render_summary(
        report.summary, name=report.name, period=run.period, rows=rendered.rows, params=run.params
    )
    key = f"reports/{report.id}/{run.id}/{rendered.filename}"
    c.blobs.put(key, rendered.data, rendered.content_type, {"run_id": run.id, "report_id": report.id})
    return c.store.transition_run(
        run.id,
        [RunStatus.RENDERING],
        RunStatus.DELIVERING,
        artifact_key=key,
        content_type=rendered.content_type,
        summary=summary,
        updated_at=c.clock.now(),
    )


def _deliveries_for(c: Container, report: ReportDefinition, run: Run) -> list[Delivery]:
    now = c.clock.now()
    targets = report.recipients.targets() + [("email", e) for e in run.extra_recipients]
    suppressed_emails = c.store.suppressed_among([r for ch, r in targets if ch == "email"], report.id)
    seen: set[tuple[str, str]] = set()
    deliveries = []
    for channel, recipient in targets:
        if (channel, recipient.lower()) in seen:
            continue
        seen.add((channel, recipient.lower()))
        suppressed = channel == "email" and recipient.lower() in suppressed_emails
        deliveries.append(
            Delivery(
                id=ids.delivery_id(run.id, channel, recipient),
                run_id=run.id,
                report_id=report.id,
                channel=channel,
                recipient=recipient,
                status=DeliveryStatus.SUPPRESSED if suppressed else DeliveryStatus.QUEUED,
                link_token=secrets.token_urlsafe(24),  # 192 bits: an unguessable capability
                created_at=now,
                updated_at=now,
            )
        )
    return deliveries


def fan_out(c: Container, report: ReportDefinition, run: Run) -> int:
    """Create one delivery and one send task per (channel, recipient); idempotent."""
    deliveries = _deliveries_for(c, report, run)
    created = c.store.create_deliveries(deliveries)
    if run.recipients_total != len(deliveries):
        c.store.update_run(run.id, recipients_total=len(deliveries))
    if created == len(deliveries):  # the first fan-out: every delivery is new, no need to read them back
        queued = c.queue.enqueue_many([send_task(d.id, 0) for d in deliveries if d.status == DeliveryStatus.QUEUED])
    else:  # a redelivered task: (re)queue whatever still waits for its first attempt
        queued = _requeue_waiting(c, run.id)
    log.info("fan-out", extra={"run_id": run.id, "deliveries": len(deliveries), "new": created, "tasks": queued})
    if not c.store.has_open_deliveries(run.id):
        c.queue.enqueue(finish_run_task(run.id))
    return created


def _requeue_waiting(c: Container, run_id: str) -> int:
    waiting = pages(
        lambda cursor: c.store.list_deliveries(
            run_id=run_id, status=DeliveryStatus.QUEUED, limit=FANOUT_PAGE, cursor=cursor
        )
    )
    return sum(c.queue.enqueue_many([send_task(d.id, 0) for d in items]) for items in waiting)


# The finish task ----------------------------------------------------------------------
def finish_run(c: Container, run_id: str) -> Run | None:
    """Settle a run once no delivery is open; alert and heartbeat exactly once."""
    run = c.store.get_run(run_id)
    if run is None:
        return None
    counts: dict[str, int] = {}
    settled_here = run.status == RunStatus.FAILED and bool(run.error)  # failed before delivery (render)
    if run.status == RunStatus.DELIVERING:
        if c.store.has_open_deliveries(run_id):
            return run
        counts = c.store.delivery_counts(run_id)
        failed = sum(n for s, n in counts.items() if s in DELIVERY_FAILED)
        sent = sum(n for s, n in counts.items() if s not in DELIVERY_FAILED and s != DeliveryStatus.SUPPRESSED)
        now = c.clock.now()
        settled = c.store.transition_run(
            run_id, [RunStatus.DELIVERING], run_outcome(sent, failed), finished_at=now, updated_at=now
        )
        settled_here = settled is not None
        run = settled or c.store.get_run(run_id) or run
    stored = c.store.get_report(run.report_id)
    if stored is None or run.status not in (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED):
        return run
    report = stored.definition
    if settled_here:  # at-least-once (a redelivered finish task may repeat it); subscribers dedupe by event_id
        events.run_completed(c, run, counts)
        watchdog.note_recovery(c, report, run)  # only if the watchdog had called this slot late
    if run.status in (RunStatus.PARTIAL, RunStatus.FAILED):
        _alert_failures(c, report, run)
    if report.heartbeat_url and not run.heartbeat_sent:
        # A monitor that is down never changes the run's outcome: ping() logs and returns.
        c.heartbeat.ping(report.heartbeat_url, "success" if run.status == RunStatus.SUCCEEDED else "fail", run_id)
        c.store.update_run(run_id, heartbeat_sent=True)
    log.info("run finished", extra={"run_id": run_id, "report_id": run.report_id, "status": str(run.status)})
    return run


def _alert_failures(c: Container, report: ReportDefinition, run: Run) -> None:
    if run.error:
        alerts.alert_owner(
            c,
            kind="run_failed",
            owner=report.owner,
            report_id=report.id,
            run_id=run.id,
            subject=f"{report.name} ({run.period}) failed",
            body=f"Run {run.id} failed: {run.error}",
        )
        return

    def failed(status: DeliveryStatus) -> Iterator[list[Delivery]]:
        return pages(lambda cursor: c.store.list_deliveries(run_id=run.id, status=status, limit=1000, cursor=cursor))

    lines = [
        f"- {d.recipient} ({d.channel}): {d.last_error or status}"
        for status in sorted(DELIVERY_FAILED)
        for items in failed(status)
        for d in items
    ]
    body = (
        f"{len(lines)} of {run.recipients_total} recipients of {report.name} ({run.period}) "
        f"did not receive it (run {run.id}):\n" + "\n".join(sorted(lines))
    )
    alerts.alert_owner(
        c,
        kind="delivery_failures",
        owner=report.owner,
        report_id=report.id,
        run_id=run.id,
        subject=f"{report.name} ({run.period}): {len(lines)} failed deliveries",
        body=body,
    )


def run_view(run: Run, counts: dict[str, int]) -> dict[str, Any]:
    return {**run.to_doc(), "deliveries": counts}
