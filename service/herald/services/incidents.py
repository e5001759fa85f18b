"""Watchdog incidents instead of floods (ARCHITECTURE.md decision 12).

One incident per report and cause (``late`` — slots not started, pending, rendering,
delivering or missed —, ``stuck``, ``tick``): opened once with one ops message, updated
while it lasts (its record gains each new slot and state, nothing is posted again), and
closed with one all-clear that names what happened ("3 slots missed 18:53-18:55; 18:56
succeeded"). "Resolved" is said only when a run succeeds; a late run that ends failed is
reported as failed and the incident stays open.

Bookkeeping lives in ``notices`` beside the alerts (never shown as alerts): a pointer per
(report, cause) to its open incident, claimed with a conditional write so racing passes
open one incident; and a marker per slot with the state last told, so a slot that goes
from "not started" to "missed" is told again while one that stays the same is not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from herald.domain.ids import alert_id, notice_id, scheduled_run_id
from herald.domain.records import Alert, Run
from herald.domain.reports import ReportDefinition
from herald.domain.states import RunStatus
from herald.ports.container import Container
from herald.services import alerts

log = logging.getLogger(__name__)

NEW, UPDATED, SAME = "new", "updated", "same"
SLOT_PREFIX = "slot:"  # incident params keys that are slots (ISO UTC) rather than runs


@dataclass(frozen=True)
class Finding:
    """Something wrong, as one pass of the watchdog sees it."""

    report: ReportDefinition | None
    cause: str  # late | stuck | tick
    key: str  # what it is about within the cause: a slot (ISO UTC), a run id, the tick's state
    state: str  # not started, pending, missed, rendering, …
    subject: str  # the incident's first message, if it opens one
    body: str
    run_id: str | None = None


def _report_key(report: ReportDefinition | None) -> str:
    return report.id if report else "-"


def _notice(c: Container, the_id: str, kind: str, now: datetime) -> Alert:
    existing = c.store.get_alert(the_id)
    if existing is not None:
        return existing
    c.store.add_alert(Alert(id=the_id, kind=kind, target="", subject="", body="", created_at=now))
    return c.store.get_alert(the_id) or Alert(id=the_id, kind=kind, target="", subject="", body="", created_at=now)


def record(c: Container, finding: Finding, now: datetime, *, post: bool = True) -> str:
    """Tell ops about ``finding`` once: NEW (an incident opened; posted unless ``post`` is
    False — the caller summarises it), UPDATED (joined the open incident, nothing posted) or
    SAME (already told in this state)."""
    report_id = _report_key(finding.report)
    marker_id = notice_id("marker", report_id, finding.cause, finding.key)
    marker = c.store.get_alert(marker_id)
    if marker is not None and marker.params.get("state") == finding.state:
        return SAME
    pointer_id = notice_id("incident", report_id, finding.cause)
    pointer = _notice(c, pointer_id, "incident_pointer", now)
    opened = alert_id("incident", report_id, finding.cause, finding.key, now.isoformat())
    outcome = NEW

    def claim(p: Alert) -> dict[str, Any] | None:
        return None if p.params.get("open") else {"params": {**p.params, "open": opened}}

    if pointer.params.get("open") or c.store.mutate_alert(pointer_id, claim) is None:
        outcome = UPDATED
        current = c.store.get_alert(pointer_id) or pointer
        opened = current.params.get("open", opened)
    entry = f"{SLOT_PREFIX}{finding.key}" if finding.cause == "late" else finding.key
    if outcome == NEW:
        incident = Alert(
            id=opened,
            kind=f"incident_{finding.cause}",
            target=c.settings.ops_slack_channel,
            report_id=finding.report.id if finding.report else None,
            run_id=finding.run_id,
            subject=finding.subject,
            body=finding.body,
            created_at=now,
            params={entry: finding.state},
        )
        if post:
            alerts.ops_alert(c, incident)
        else:
            c.store.add_alert(incident)
        log.warning(
            "watchdog incident opened", extra={"alert_id": opened, "report_id": report_id, "cause": finding.cause}
        )
    else:
        line = f"{now:%Y-%m-%d %H:%M} UTC: {finding.subject}"
        c.store.mutate_alert(
            opened,
            lambda a: {"params": {**a.params, entry: finding.state}, "body": (a.body + "\n" + line)[-8000:]},
        )
    marker_doc = {"state": finding.state, "incident": opened}
    if marker is None:
        c.store.add_alert(
            Alert(
                id=marker_id, kind="incident_marker", target="", subject="", body="", created_at=now, params=marker_doc
            )
        )
    else:
        c.store.mutate_alert(marker_id, lambda a: {"params": marker_doc})
    return outcome


def open_incident(c: Container, report: ReportDefinition | None, cause: str) -> Alert | None:
    pointer = c.store.get_alert(notice_id("incident", _report_key(report), cause))
    if pointer is None or not pointer.params.get("open"):
        return None
    return c.store.get_alert(pointer.params["open"])


def close(c: Container, report: ReportDefinition | None, cause: str, outcome: str, now: datetime) -> bool:
    """Close the open incident of (report, cause) with one all-clear naming what happened."""
    pointer_id = notice_id("incident", _report_key(report), cause)
    pointer = c.store.get_alert(pointer_id)
    if pointer is None or not pointer.params.get("open"):
        return False
    incident_id = pointer.params["open"]

    def release(p: Alert) -> dict[str, Any] | None:
        return {"params": {**p.params, "open": ""}} if p.params.get("open") == incident_id else None

    if c.store.mutate_alert(pointer_id, release) is None:
        return False  # another finish or pass closed it
    incident = c.store.get_alert(incident_id)
    states = _final_states(c, report, cause, incident.params if incident else {}, now)
    told = summary(report, states)
    subject = f"Resolved: {report.name if report else 'the scheduler tick'}: {told}; {outcome}"
    body = "\n".join(
        [
            f"Incident: {incident.subject if incident else incident_id}",
            f"What happened: {told}",
            f"Then: {outcome} ({now:%Y-%m-%d %H:%M} UTC)",
        ]
    )
    alerts.ops_message(
        c,
        the_id=alert_id("incident-clear", incident_id),
        kind=f"incident_{cause}_resolved",
        report_id=report.id if report else None,
        run_id=None,
        subject=subject,
        body=body,
    )
    log.info("watchdog incident closed", extra={"alert_id": incident_id, "cause": cause})
    return True


def _final_states(
    c: Container, report: ReportDefinition | None, cause: str, params: dict[str, str], now: datetime
) -> dict[str, str]:
    """The slots' states as they ended: a slot told "not started" that the tick later recorded
    missed is said as missed in the all-clear (and its marker learns it, so it is not told again)."""
    if cause != "late" or report is None:
        return params
    final = dict(params)
    for key in params:
        if not key.startswith(SLOT_PREFIX):
            continue
        slot = datetime.fromisoformat(key.removeprefix(SLOT_PREFIX))
        run = c.store.get_run(scheduled_run_id(report.id, slot))
        if run is not None and run.status == RunStatus.MISSED and params[key] != "missed":
            final[key] = "missed"
            marker_id = notice_id("marker", report.id, cause, key.removeprefix(SLOT_PREFIX))
            c.store.mutate_alert(marker_id, lambda a: {"params": {**a.params, "state": "missed"}})
    return final


def summary(report: ReportDefinition | None, params: dict[str, str]) -> str:
    """ "3 slots missed, 18:53-18:55; 1 slot late (pending), 18:56" in the report's zone."""
    zone = ZoneInfo(report.schedule.timezone if report and report.schedule else "UTC")
    by_state: dict[str, list[datetime]] = {}
    others: dict[str, int] = {}
    for key, state in params.items():
        if key.startswith(SLOT_PREFIX):
            by_state.setdefault(state, []).append(datetime.fromisoformat(key.removeprefix(SLOT_PREFIX)))
        else:
            others[state] = others.get(state, 0) + 1
    parts = []
    for state, slots in sorted(by_state.items()):
        slots.sort()
        first, last = (s.astimezone(zone) for s in (slots[0], slots[-1]))
        end = f"{last:%H:%M}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M}"
        span = f"{first:%Y-%m-%d %H:%M}" if first == last else f"{first:%Y-%m-%d %H:%M}-{end}"
        noun = "slot" if len(slots) == 1 else "slots"
        said = state if state == "missed" else f"late ({state})"
        parts.append(f"{len(slots)} {noun} {said}, {span} {first.tzname()}")
    parts += [f"{n} x {state}" for state, n in sorted(others.items())]
    return "; ".join(parts) or "an incident"


def when(report: ReportDefinition, run: Run) -> str:
    zone = ZoneInfo(report.schedule.timezone if report.schedule else "UTC")
    instant = (run.slot or run.created_at).astimezone(zone)
    return f"{instant:%Y-%m-%d %H:%M %Z}"


def run_finished(c: Container, report: ReportDefinition, run: Run, now: datetime) -> None:
    """A run ended: a success closes its report's incidents; a failure is said as a failure
    (never "recovered") when the report has a late incident open, or always when
    settings.watchdog_notify_failed_runs is on."""
    if run.status == RunStatus.SUCCEEDED:
        outcome = f"{when(report, run)} succeeded"
        if run.trigger == "schedule":
            close(c, report, "late", outcome, now)
        close(c, report, "stuck", f"run {run.id} {outcome}", now)
        return
    if run.status not in (RunStatus.FAILED, RunStatus.PARTIAL):
        return
    late = run.trigger == "schedule" and open_incident(c, report, "late") is not None
    if not (late or c.settings.watchdog_notify_failed_runs):
        return
    reason = run.error or "some recipients did not receive it"
    subject = f"Failed: {report.name} for {when(report, run)} ended {run.status}" + (" (it was late)" if late else "")
    alerts.ops_message(
        c,
        the_id=alert_id("watchdog", "failed", run.id),
        kind="failed_run",
        report_id=report.id,
        run_id=run.id,
        subject=subject,
        body=f"Run {run.id} ended {run.status} at {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC: {reason}",
    )
