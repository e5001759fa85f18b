"""The dependency gate: a run waits for its upstream completion records (``job_status``).

The record a run needs is ``job_status(job, label)``, the label derived from the run's
own period or slot, so yesterday's record never releases today's run. A waiting run
moves on as soon as its record arrives (``record_job_status`` enqueues it), is re-checked
every ``dependency_recheck_seconds`` as a fallback (records written straight into the
store by an upstream job are found this way), and at each dependency's deadline
(slot or creation + ``wait_up_to``) its ``on_timeout`` policy decides: ``fail`` (the
owner is alerted by finish_run), ``send_anyway`` (with a "data as of" note) or ``skip``.

Where records live (for upstream jobs that write them directly): SQLite table
``job_status(job, period, doc)`` with ``doc`` the JSON record below; Firestore collection
``job_status``, one document per (job, period) with the record as JSON text in
``record_json``. Record: ``{"job", "period", "status": "succeeded", "completed_at"}``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from herald.domain.periods import period_label
from herald.domain.records import Run
from herald.domain.reports import JOB_PATTERN, Dependency, ReportDefinition
from herald.domain.states import RunStatus
from herald.ports.container import Container
from herald.ports.store import pages
from herald.services.tasks import execute_run_task, finish_run_task, release_run_task

log = logging.getLogger(__name__)

PERIOD_PATTERN = r"^\d{4}(-\d{2}(-\d{2})?|-W\d{2})$"  # the labels periods.period_label makes
RELEASE_PAGE = 500
EARLIER_PERIODS = 6  # how far back "data as of" looks for the last completed record


class JobStatusIn(BaseModel):
    """A completion record as POSTed to /api/job-status or published on Pub/Sub."""

    model_config = ConfigDict(extra="forbid")
    job: Annotated[str, Field(pattern=JOB_PATTERN)]
    period: Annotated[str, Field(pattern=PERIOD_PATTERN)]
    status: Literal["succeeded"]
    completed_at: AwareDatetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("details")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > 10_000:
            raise ValueError("details must be under 10,000 characters of JSON")
        return value


def record_job_status(c: Container, data: Any, via: str = "api") -> tuple[dict[str, Any], bool]:
    """Store a completion record once and release the runs waiting for it.

    Returns (the stored record, created). A repeat keeps the first record and releases
    again: a crash between storing and releasing is healed by the sender's retry."""
    parsed = JobStatusIn.model_validate(data)
    now = c.clock.now()
    record = {
        "job": parsed.job,
        "period": parsed.period,
        "status": parsed.status,
        "completed_at": (parsed.completed_at or now).astimezone(UTC).isoformat(),
        "recorded_at": now.isoformat(),
        "details": parsed.details,
        "via": via,
    }
    created = c.store.put_job_status(parsed.job, parsed.period, record)
    stored = c.store.get_job_status(parsed.job, parsed.period) or record
    released = release_waiting(c, parsed.job, parsed.period)
    log.info(
        "job status recorded" if created else "job status repeated",
        extra={"job": parsed.job, "period": parsed.period, "released": released, "via": via},
    )
    return stored, created


def release_waiting(c: Container, job: str, period: str) -> int:
    """Enqueue every waiting run that needs this record: O(waiting runs)."""
    definitions: dict[str, ReportDefinition | None] = {}
    released = 0
    waiting = pages(lambda cursor: c.store.list_runs(status=RunStatus.WAITING, limit=RELEASE_PAGE, cursor=cursor))
    for items in waiting:
        for run in items:
            if run.report_id not in definitions:
                stored = c.store.get_report(run.report_id)
                definitions[run.report_id] = stored.definition if stored else None
            report = definitions[run.report_id]
            if report is None:
                continue
            if any(d.job == job and required_label(d, report, run) == period for d in report.depends_on):
                released += c.queue.enqueue(release_run_task(run.id, job, period))
    return released


# The gate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Need:
    dependency: Dependency
    index: int
    label: str
    deadline: datetime
    record: dict[str, Any] | None


def _zone(report: ReportDefinition) -> str:
    return report.schedule.timezone if report.schedule else "UTC"


def required_label(dependency: Dependency, report: ReportDefinition, run: Run) -> str:
    if dependency.period == "same":
        return run.period
    return period_label(dependency.period, run.slot or run.created_at, _zone(report))


def needs(c: Container, report: ReportDefinition, run: Run) -> list[Need]:
    base = run.slot or run.created_at
    out = []
    for index, dep in enumerate(report.depends_on):
        label = required_label(dep, report, run)
        out.append(Need(dep, index, label, base + dep.wait, c.store.get_job_status(dep.job, label)))
    return out


def describe(c: Container, report: ReportDefinition, run: Run) -> str:
    """What a waiting run waits for, for people (watchdog alerts, logs)."""
    missing = [n for n in needs(c, report, run) if n.record is None]
    return "; ".join(
        f"waiting for {n.dependency.job} {n.label} until {n.deadline:%Y-%m-%d %H:%M} UTC "
        f"(then {n.dependency.on_timeout})"
        for n in missing
    )


def hold(c: Container, report: ReportDefinition, run: Run) -> Run | None:
    """None when the run may start now; else the run as it stands (waiting, failed or skipped)."""
    now = c.clock.now()
    missing = [n for n in needs(c, report, run) if n.record is None]
    if not missing:
        return None
    expired = [n for n in missing if now >= n.deadline]
    pending = [n for n in missing if now < n.deadline]
    policies = {n.dependency.on_timeout for n in expired}
    if "fail" in policies:
        return _fail(c, run, [n for n in expired if n.dependency.on_timeout == "fail"], now)
    if "skip" in policies:
        return _skip(c, run, [n for n in expired if n.dependency.on_timeout == "skip"], now)
    if pending:
        return _wait(c, run, pending, now)
    note = " ".join(_data_as_of(c, report, run, n) for n in expired)  # every expired one is send_anyway
    log.warning("dependency timed out: sending anyway", extra={"run_id": run.id, "note": note})
    c.store.update_run(run.id, note=note, updated_at=now)
    return None


def _late(needs_: list[Need]) -> str:
    return ", ".join(
        f"{n.dependency.job} {n.label} (waited {n.dependency.wait_up_to}, until {n.deadline:%Y-%m-%d %H:%M} UTC)"
        for n in needs_
    )


def _fail(c: Container, run: Run, late: list[Need], now: datetime) -> Run:
    error = f"upstream data not complete in time: {_late(late)}"
    failed = c.store.transition_run(
        run.id, [RunStatus.PENDING, RunStatus.WAITING], RunStatus.FAILED, error=error, finished_at=now, updated_at=now
    )
    if failed is not None:  # finish_run alerts the owner and sends the fail heartbeat
        log.error("dependency timed out: run failed", extra={"run_id": run.id, "error": error})
        c.queue.enqueue(finish_run_task(run.id))
    return failed or c.store.get_run(run.id) or run


def _skip(c: Container, run: Run, late: list[Need], now: datetime) -> Run:
    note = f"Skipped: upstream data not complete in time: {_late(late)}"
    skipped = c.store.transition_run(
        run.id, [RunStatus.PENDING, RunStatus.WAITING], RunStatus.SKIPPED, note=note, finished_at=now, updated_at=now
    )
    if skipped is not None:
        log.warning("dependency timed out: run skipped", extra={"run_id": run.id, "note": note})
    return skipped or c.store.get_run(run.id) or run


def _wait(c: Container, run: Run, pending: list[Need], now: datetime) -> Run:
    waiting = run
    if run.status == RunStatus.PENDING:
        waiting = c.store.transition_run(run.id, [RunStatus.PENDING], RunStatus.WAITING, updated_at=now) or run
        log.info("run waiting for upstream data", extra={"run_id": run.id, "needs": _late(pending)})
    # Fallback re-check on a fixed grid from the run's base time, or at the nearest deadline
    # if that comes first. Names derive from the grid slot / the dependency, so however
    # often the run is executed meanwhile, each re-check is queued once.
    base = run.slot or run.created_at
    every = c.settings.dependency_recheck_seconds
    # At least the first slot: a worker whose clock is a little behind the one that stamped
    # the run (now < base) would otherwise name its re-check round 0, the run's own first
    # task name, which the queue drops as a repeat, and the run would wait for ever.
    grid = max(int((now - base).total_seconds() // every), 0) + 1
    recheck = base + timedelta(seconds=grid * every)
    nearest = min(pending, key=lambda n: n.deadline)
    if nearest.deadline <= recheck:
        c.queue.enqueue(execute_run_task(run.id, eta=nearest.deadline, round_=-(nearest.index + 1)))
    else:
        c.queue.enqueue(execute_run_task(run.id, eta=recheck, round_=grid))
    return waiting


def _data_as_of(c: Container, report: ReportDefinition, run: Run, need: Need) -> str:
    """The note for a run sent without its upstream record: when its data was last complete."""
    kind = report.period if need.dependency.period == "same" else need.dependency.period
    reference = run.slot or run.created_at
    seen = {need.label}
    for days in range(1, 400):
        label = period_label(kind, reference - timedelta(days=days), _zone(report))
        if label in seen:
            continue
        seen.add(label)
        record = c.store.get_job_status(need.dependency.job, label)
        if record is not None:
            return (
                f"Data as of {_completed(record)} ({need.dependency.job} {label}): "
                f"{need.dependency.job} {need.label} had not completed by {need.deadline:%d %b %Y %H:%M} UTC."
            )
        if len(seen) > EARLIER_PERIODS:
            break
    return (
        f"Data may be incomplete: {need.dependency.job} {need.label} had not completed "
        f"by {need.deadline:%d %b %Y %H:%M} UTC."
    )


def _completed(record: dict[str, Any]) -> str:
    """A record's completion time for people; records written by upstream jobs may be loose."""
    raw = str(record.get("completed_at") or record.get("recorded_at") or "")
    try:
        when = datetime.fromisoformat(raw.upper())  # RFC 3339 allows a lower-case "t" and "z"
    except ValueError:
        return raw or "an unknown time"
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return f"{when:%d %b %Y %H:%M} UTC"
