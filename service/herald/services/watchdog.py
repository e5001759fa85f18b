"""The watchdog: nothing fails silently, including the scheduler itself.

One pass (every 5 minutes: ``herald serve``'s thread, ``herald watchdog``, or the Cloud
Run Job ``python -m jobs.watchdog``) posts to the ops channel:

- a *late slot*: a scheduled slot whose run has not completed ``grace`` after its time
  (settings.watchdog_grace_seconds, per report ``watchdog_grace``): a run still pending,
  waiting, rendering or delivering; a slot the tick recorded as missed; or a slot with
  no run at all because the tick did not handle it (``store.due_reports(now - grace)``);
- a *stuck run*: one state for longer than settings.watchdog_max_runtime_seconds
  (a waiting run: that long after its longest dependency wait);
- an *unhealthy tick*: the Cloud Scheduler tick job (gcp, ``Container.tick_health``)
  or the embedded ticker's last-tick file says the tick is silent or failing;
- a *recovery note* when a run whose slot was called late completes (finish_run).

One alert per incident: alert ids derive from what they are about (report + slot, run +
state, tick incident) and ``store.add_alert`` keeps the first, so repeated passes post
nothing new; an alert whose post failed is retried on the next pass. More than
settings.watchdog_max_alerts new alerts in one pass post as one summary: never a flood.
Every query is O(late or in-flight work), never O(all schedules).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from herald.domain.ids import alert_id
from herald.domain.records import Alert, Run
from herald.domain.reports import ReportDefinition, parse_duration
from herald.domain.schedules import slots_between
from herald.domain.states import RunStatus
from herald.ports.container import Container
from herald.ports.heartbeat import HeartbeatState
from herald.ports.store import pages
from herald.ports.tick import TickState
from herald.services import alerts, dependencies, incidents
from herald.settings import Settings

log = logging.getLogger(__name__)

IN_FLIGHT = (RunStatus.PENDING, RunStatus.WAITING, RunStatus.RENDERING, RunStatus.DELIVERING)
MISSED_LOOKBACK = timedelta(days=2)  # missed runs older than this were alerted by earlier passes
MAX_SLOTS_PER_REPORT = 24  # a long-dead tick: the most recent slots are named, the count is given
PAGE = 500
TICK_FILE = "ticker.last"


@dataclass
class WatchdogResult:
    found: list[str] = field(default_factory=list)  # alert ids of every current incident
    new: list[str] = field(default_factory=list)  # incidents first seen in this pass
    posted: int = 0  # messages posted to the ops channel


# One pass ---------------------------------------------------------------------------------
def run_watchdog(
    c: Container, now: datetime | None = None, tick_health: Callable[[], TickState | None] | None = None
) -> WatchdogResult:
    now = now or c.clock.now()
    try:
        result = _pass(c, now, tick_health)
    except Exception:
        _ping(c, "fail", now)
        raise
    _ping(c, "success", now)
    return result


def _pass(c: Container, now: datetime, tick_health: Callable[[], TickState | None] | None) -> WatchdogResult:
    reports: dict[str, ReportDefinition | None] = {}

    def definition(report_id: str) -> ReportDefinition | None:
        if report_id not in reports:
            stored = c.store.get_report(report_id)
            reports[report_id] = stored.definition if stored else None
        return reports[report_id]

    findings = _in_flight(c, now, definition) + _missed(c, now, definition) + _unticked(c, now)
    findings += _tick(c, now, tick_health)
    result = WatchdogResult()
    cap = max(1, c.settings.watchdog_max_alerts)
    summarised: list[Alert] = []
    for alert in dict((a.id, a) for a in findings).values():
        result.found.append(alert.id)
        finding = incidents.Finding(
            report=definition(alert.report_id) if alert.report_id else None,
            cause=alert.params["cause"],
            key=alert.params["key"],
            state=alert.params["state"],
            subject=alert.subject,
            body=alert.body,
            run_id=alert.run_id,
        )
        # A new incident is one message (a durable notification); the same incident's further
        # slots update its record and post nothing; past the cap, new incidents are summarised.
        told = incidents.record(c, finding, now, post=len(result.new) < cap)
        if told == incidents.NEW:
            result.new.append(alert.id)
            if len(result.new) <= cap:
                result.posted += 1
            else:
                summarised.append(alert)
    if summarised:
        result.posted += _summarise(c, summarised, now)
    if result.new:
        log.warning("watchdog found new incidents", extra={"new": len(result.new), "open": len(result.found)})
    return result


def grace_of(c: Container, report: ReportDefinition) -> timedelta:
    if report.watchdog_grace:
        return parse_duration(report.watchdog_grace)
    return timedelta(seconds=c.settings.watchdog_grace_seconds)


def late_alert_id(report_id: str, slot: datetime) -> str:
    return alert_id("watchdog", "late", report_id, slot.astimezone(UTC).isoformat())


def _local(report: ReportDefinition, slot: datetime) -> str:
    zone = report.schedule.timezone if report.schedule else "UTC"
    local = slot.astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M %Z} ({zone}) = {slot.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _ops_alert(
    c: Container,
    kind: str,
    the_id: str,
    report: ReportDefinition | None,
    run: Run | None,
    subject: str,
    body: str,
    now: datetime,
) -> Alert:
    return Alert(
        id=the_id,
        kind=kind,
        target=c.settings.ops_slack_channel,
        report_id=report.id if report else (run.report_id if run else None),
        run_id=run.id if run else None,
        subject=subject,
        body=body,
        created_at=now,
    )


def _late(
    c: Container,
    report: ReportDefinition,
    slot: datetime,
    state: str,
    known: list[str],
    now: datetime,
    run: Run | None = None,
) -> Alert:
    grace = grace_of(c, report)
    lines = [
        f"Report: {report.name} ({report.id}), owner {report.owner}",
        f"Slot: {_local(report, slot)}",
        f"State: {state}, {_minutes(now - slot)} after the slot (grace {_minutes(grace)})",
        *known,
    ]
    subject = f"Late: {report.name} for {slot.astimezone(UTC):%Y-%m-%d %H:%M} UTC is {state}"
    late = _ops_alert(c, "late_run", late_alert_id(report.id, slot), report, run, subject, "\n".join(lines), now)
    return _about(late, "late", slot.astimezone(UTC).isoformat(), state)


def _about(alert: Alert, cause: str, key: str, state: str) -> Alert:
    """A finding: which incident (cause) of its report it belongs to, about what, in what state."""
    return alert.model_copy(update={"params": {"cause": cause, "key": key, "state": state}})


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes} min"


# What is late -------------------------------------------------------------------------------
def _in_flight(c: Container, now: datetime, definition: Callable[[str], ReportDefinition | None]) -> list[Alert]:
    """Runs not finished: late scheduled slots and stuck runs. O(in-flight runs)."""
    found = []
    max_runtime = timedelta(seconds=c.settings.watchdog_max_runtime_seconds)
    for status in IN_FLIGHT:
        for run in _runs(c, status):
            report = definition(run.report_id)
            known = [f"Run: {run.id}, created {run.created_at:%Y-%m-%d %H:%M} UTC"]
            if run.started_at:
                known.append(f"Started: {run.started_at:%Y-%m-%d %H:%M} UTC")
            if status == RunStatus.WAITING and report is not None:
                known.append(dependencies.describe(c, report, run) or "waiting")
            if status == RunStatus.DELIVERING:
                counts = c.store.delivery_counts(run.id)
                known.append("Deliveries: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            if report is not None and run.trigger == "schedule" and run.slot and now - run.slot > grace_of(c, report):
                found.append(_late(c, report, run.slot, str(status), known, now, run))
            limit = max_runtime
            if status == RunStatus.WAITING and report is not None and report.depends_on:
                limit += max(d.wait for d in report.depends_on)
            if now - run.updated_at > limit:
                subject = f"Stuck: run {run.id} of {run.report_id} has been {status} since {run.updated_at:%H:%M} UTC"
                state = f"State: {status} for {_minutes(now - run.updated_at)}"
                body = "\n".join([f"Report: {run.report_id}", state, *known])
                the_id = alert_id("watchdog", "stuck", run.id, str(status))
                stuck = _ops_alert(c, "stuck_run", the_id, report, run, subject, body, now)
                found.append(_about(stuck, "stuck", run.id, str(status)))
    return found


def _runs(c: Container, status: RunStatus, until: datetime | None = None) -> list[Run]:
    out: list[Run] = []
    for items in pages(lambda cursor: c.store.list_runs(status=status, limit=PAGE, cursor=cursor)):
        for run in items:
            if until is not None and run.created_at < until:  # newest first: the rest are older
                return out
            out.append(run)
    return out


def _missed(c: Container, now: datetime, definition: Callable[[str], ReportDefinition | None]) -> list[Alert]:
    """Slots the tick saw too late to run (recorded as missed). O(recent missed runs)."""
    found = []
    for run in _runs(c, RunStatus.MISSED, until=now - MISSED_LOOKBACK):
        report = definition(run.report_id)
        if report is None or run.slot is None or now - run.slot <= grace_of(c, report):
            continue
        known = [
            f"Run: {run.id}: the tick reached this slot only at {run.created_at:%Y-%m-%d %H:%M} UTC, "
            f"past the misfire window ({c.settings.misfire_seconds}s), so nothing was sent.",
            f"Send it now: herald run {report.id}  (or POST /api/reports/{report.id}/runs)",
        ]
        found.append(_late(c, report, run.slot, "missed", known, now, run))
    return found


def _unticked(c: Container, now: datetime) -> list[Alert]:
    """Slots no run was created for: the tick has not moved these schedules. O(overdue schedules)."""
    floor = min(timedelta(seconds=c.settings.watchdog_grace_seconds), timedelta(minutes=1))
    found = []
    for stored in c.store.due_reports(now - floor, c.settings.tick_batch):
        report, first = stored.definition, stored.next_fire_at
        if report.schedule is None or first is None:
            continue
        until = now - grace_of(c, report)
        slots = slots_between(report.schedule, first, until, MAX_SLOTS_PER_REPORT)
        for slot in slots:
            known = [
                f"No run was created: the tick has not handled this schedule since {first:%Y-%m-%d %H:%M} UTC. "
                "Is the tick running (Cloud Scheduler job / `herald serve`)?",
            ]
            found.append(_late(c, report, slot, "not started", known, now))
    return found


# The tick itself ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileTickHealth:
    """The embedded ticker's health: the time of its last successful tick, kept in a file."""

    last_attempt_at: datetime | None
    last_status_ok: bool | None = True
    state: str = "ENABLED"
    last_status_message: str = ""

    def healthy(self, now: datetime, max_silence: timedelta) -> bool:
        return self.last_attempt_at is not None and now - self.last_attempt_at <= max_silence


def record_tick(settings: Settings, now: datetime) -> None:
    """Called by the embedded ticker after each successful tick."""
    path = settings.data_dir / TICK_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(now.astimezone(UTC).isoformat())
    tmp.replace(path)


def file_tick_health(settings: Settings) -> FileTickHealth | None:
    """None when this data dir never had a ticker (nothing to say about it)."""
    path: Path = settings.data_dir / TICK_FILE
    try:
        return FileTickHealth(datetime.fromisoformat(path.read_text().strip()))
    except FileNotFoundError:
        return None
    except ValueError:
        return FileTickHealth(None, None, "UNREADABLE")


def _tick(c: Container, now: datetime, provider: Callable[[], TickState | None] | None) -> list[Alert]:
    read: Callable[[], TickState | None] = provider or c.tick_health or (lambda: file_tick_health(c.settings))
    try:
        health = read()
    except Exception as exc:  # cannot read it (e.g. Scheduler API down): say so in the log, not a false alarm
        log.warning("watchdog: tick health unavailable", extra={"error": str(exc)})
        return []
    max_silence = timedelta(seconds=max(3 * c.settings.tick_seconds, 180))
    if health is None or health.healthy(now, max_silence):
        if health is not None:  # the tick is back: one all-clear for its incident, if one is open
            since = f"{health.last_attempt_at:%Y-%m-%d %H:%M} UTC" if health.last_attempt_at else "now"
            incidents.close(c, None, "tick", f"the tick is running again (last tick {since})", now)
        return []
    last = f"{health.last_attempt_at:%Y-%m-%d %H:%M} UTC" if health.last_attempt_at else "never"
    if health.last_status_ok is False and health.state == "ENABLED":
        # Attempts go on and fail: one alert per distinct error per day, not one per attempt.
        incident = alert_id("watchdog", "tick", "failing", health.last_status_message, now.date().isoformat())
        subject = f"The scheduler tick is failing ({health.last_status_message or 'error'})"
    else:
        incident = alert_id("watchdog", "tick", "silent", health.state, last)
        subject = f"The scheduler tick has not run since {last} (state {health.state})"
    body = "\n".join(
        [
            f"Tick state: {health.state}; last attempt: {last}; last result: "
            + {True: "ok", False: "failed", None: "unknown"}[health.last_status_ok]
            + (f" ({health.last_status_message})" if health.last_status_message else ""),
            "No scheduled report starts while the tick is down; late slots are alerted one by one.",
        ]
    )
    state = f"failing: {health.last_status_message}" if health.last_status_ok is False else f"silent ({health.state})"
    return [_about(_ops_alert(c, "tick_unhealthy", incident, None, None, subject, body, now), "tick", "tick", state)]


# Posting -------------------------------------------------------------------------------------
def _summarise(c: Container, rest: list[Alert], now: datetime) -> int:
    """More new incidents than settings.watchdog_max_alerts in one pass: one message, never a flood."""
    lines = [f"- {a.subject}" for a in rest]
    summary = _ops_alert(
        c,
        "watchdog_summary",
        alert_id("watchdog", "summary", *sorted(a.id for a in rest)),
        None,
        None,
        f"…and {len(rest)} more watchdog alerts",
        "\n".join(lines[:100]) + (f"\n(and {len(lines) - 100} more)" if len(lines) > 100 else ""),
        now,
    )
    alerts.ops_alert(c, summary)
    return 1


def _ping(c: Container, state: HeartbeatState, now: datetime) -> None:
    if c.settings.watchdog_heartbeat_url:  # the watchdog's own dead-man switch, as a durable ping
        rid = f"watchdog-{now:%Y%m%dT%H%M%S.%f}"  # one ping per pass
        alerts.heartbeat(
            c, state=state, run=None, report_id=None, message=f"watchdog pass {state}", rid=rid, url_from="watchdog"
        )


# Recovery ------------------------------------------------------------------------------------
def note_recovery(c: Container, report: ReportDefinition, run: Run) -> None:
    """A run finished: close its report's incidents on success; say a failure as a failure."""
    incidents.run_finished(c, report, run, c.clock.now())
