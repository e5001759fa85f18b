"""The tick (ARCHITECTURE.md decision 1): O(due work), idempotent, catches up missed ticks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from herald.domain import ids
from herald.domain.reports import ReportDefinition
from herald.domain.schedules import next_fire_time, slots_between
from herald.domain.states import RunStatus
from herald.ports.container import Container
from herald.ports.store import StoredReport
from herald.services.definitions import upsert
from herald.services.reconcile import reconcile
from herald.services.runs import new_run, submit_run

log = logging.getLogger(__name__)

MAX_SLOTS_PER_REPORT = 100  # after a long outage, older slots are summarised in the log


@dataclass
class TickResult:
    started: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    reports: int = 0
    failed: list[str] = field(default_factory=list)  # reports whose runs could not be started this time
    reconciled: int = 0  # stalled runs, deliveries and notifications queued again


def apply_definitions(c: Container, definitions: list[ReportDefinition]) -> list[StoredReport]:
    """Upsert definitions; a schedule keeps its next fire time unless the schedule changed.

    The plan / prune / history path of `herald apply` is services/definitions.py."""
    return upsert(c.store, definitions, c.clock.now())


def tick(c: Container, now: datetime | None = None) -> TickResult:
    now = now or c.clock.now()
    result = TickResult()
    for stored in c.store.due_reports(now, c.settings.tick_batch):
        report, expected = stored.definition, stored.next_fire_at
        if report.schedule is None or expected is None:
            continue
        result.reports += 1
        try:
            _fire(c, report, expected, now, result)
        except Exception:
            # Its schedule stays where it was, so the next tick tries these slots again; the
            # other due reports still fire. A store or queue outage shows here and in the watchdog.
            log.exception("tick could not start a report's runs", extra={"report_id": report.id})
            result.failed.append(report.id)
    if _reconcile_due(c, now):
        result.reconciled = reconcile(c, now).total
    if result.reports:
        log.info(
            "tick", extra={"due_reports": result.reports, "runs": len(result.started), "missed": len(result.missed)}
        )
    return result


def _fire(c: Container, report: ReportDefinition, expected: datetime, now: datetime, result: TickResult) -> None:
    assert report.schedule is not None
    misfire = timedelta(seconds=c.settings.misfire_seconds)
    slots = slots_between(report.schedule, expected, now, MAX_SLOTS_PER_REPORT)
    runnable = [slot for slot in slots if now - slot <= misfire]
    if report.catchup == "latest":
        # After downtime, one run for the period the recipients care about: the most recent
        # slot. Older ones are recorded missed (the watchdog announces them in one incident).
        runnable = runnable[-1:]
    for slot in slots:
        run_id = ids.scheduled_run_id(report.id, slot)
        if slot not in runnable:
            why = "past the misfire window" if now - slot > misfire else "catch-up: only the latest slot runs"
            run = new_run(report, run_id, "schedule", now, slot=slot, status=RunStatus.MISSED)
            if c.store.create_run(run.model_copy(update={"note": f"Not run: {why}"})):
                log.error(
                    "slot missed",
                    extra={
                        "report_id": report.id,
                        "slot": slot.isoformat(),
                        "late_seconds": (now - slot).total_seconds(),
                        "reason": why,
                    },
                )
            result.missed.append(run_id)
        else:
            submit_run(c, new_run(report, run_id, "schedule", now, slot=slot))  # run + its task, durable
            result.started.append(run_id)
    # Runs (and their tasks) first, then the schedule: a crash in between only repeats idempotent
    # creates, and submit_run re-queues a run whose task was never written.
    if not c.store.advance_schedule(report.id, expected, next_fire_time(report.schedule, now)):
        log.info("schedule advanced by another tick", extra={"report_id": report.id})


def _reconcile_due(c: Container, now: datetime) -> bool:
    """The reconciler's pass runs on every tick whose minute is a multiple of its period."""
    period = max(1, int(c.settings.reconcile_after_seconds // 60))
    return int(now.timestamp() // 60) % period == 0
