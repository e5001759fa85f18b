"""The on-time record: of a report's scheduled slots in the last 7 / 30 days, the share
whose run completed successfully within its watchdog grace — the number an operations
team reports upwards. Slots with no run, missed, skipped, failed or late runs all count
against it; a slot still inside its grace is not counted yet, nor are slots from before
the report's first scheduled run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from herald.domain.records import Run
from herald.domain.reports import ReportDefinition
from herald.domain.schedules import slots_between
from herald.domain.states import RunStatus
from herald.ports.container import Container
from herald.services.watchdog import grace_of

log = logging.getLogger(__name__)

WINDOWS = (7, 30)
MAX_SLOTS = 10_000  # a minutely report has 43,200 slots in 30 days: the most recent 10,000 are counted
PAGE = 500
LOG_LINE = "run on-time record"  # the log-based metric's filter matches this message (monitoring.tf)


@dataclass(frozen=True)
class OnTime:
    days: int
    slots: int
    on_time: int

    @property
    def share(self) -> float | None:
        return round(self.on_time / self.slots, 4) if self.slots else None

    def to_doc(self) -> dict[str, object]:
        return {"days": self.days, "slots": self.slots, "on_time": self.on_time, "share": self.share}


def on_time(c: Container, report: ReportDefinition, now: datetime | None = None) -> list[OnTime]:
    """The record for each window in WINDOWS (empty for reports without a schedule)."""
    if report.schedule is None:
        return []
    now = now or c.clock.now()
    grace = grace_of(c, report)
    longest = now - timedelta(days=max(WINDOWS))
    slots = slots_between(report.schedule, longest, now - grace, MAX_SLOTS)
    if not slots:
        return [OnTime(days, 0, 0) for days in WINDOWS]
    runs = _scheduled_runs(c, report.id, slots[0])
    if not runs:
        return [OnTime(days, 0, 0) for days in WINDOWS]
    first = min(runs)  # slots before Herald first ran this report (e.g. before it was applied) do not count
    slots = [slot for slot in slots if slot >= first]
    good = {slot for slot in slots if _on_time(runs.get(slot), slot, grace)}
    records = []
    for days in WINDOWS:
        since = now - timedelta(days=days)
        records.append(OnTime(days, sum(1 for s in slots if s >= since), sum(1 for s in good if s >= since)))
    return records


def _on_time(run: Run | None, slot: datetime, grace: timedelta) -> bool:
    return (
        run is not None
        and run.status == RunStatus.SUCCEEDED
        and run.finished_at is not None
        and run.finished_at <= slot + grace
    )


def _scheduled_runs(c: Container, report_id: str, since: datetime) -> dict[datetime, Run]:
    found: dict[datetime, Run] = {}
    cursor: str | None = None
    while True:  # newest first: stop at the first run created before the oldest slot counted
        page = c.store.list_runs(report_id=report_id, limit=PAGE, cursor=cursor)
        for run in page.items:
            if run.created_at < since:
                return found
            if run.trigger == "schedule" and run.slot is not None:
                found[run.slot] = run
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def record_outcome(c: Container, report: ReportDefinition, run: Run) -> None:
    """One structured log line per finished scheduled run: the source of the on-time
    log-based metric on gcp (terraform/modules/herald/monitoring.tf)."""
    if run.trigger != "schedule" or run.slot is None:
        return
    in_time = _on_time(run, run.slot, grace_of(c, report))
    log.info(
        LOG_LINE,
        extra={"report_id": report.id, "run_id": run.id, "on_time": in_time, "status": str(run.status)},
    )
