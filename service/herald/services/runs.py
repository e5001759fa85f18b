"""A run's life: create once, render once, fan out one delivery per recipient, finish once."""

from __future__ import annotations

import logging
import math
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from herald.domain import ids
from herald.domain.errors import RenderError
from herald.domain.ids import alert_id, notice_id
from herald.domain.periods import period_label
from herald.domain.records import Alert, Delivery, Run, Trigger
from herald.domain.reports import ReportDefinition, render_summary
from herald.domain.states import DELIVERY_NOT_DELIVERED, DeliveryStatus, RunStatus, run_outcome
from herald.ports.container import Container
from herald.ports.heartbeat import HeartbeatState
from herald.ports.sources import RenderRequest
from herald.ports.store import pages
from herald.services import alerts, dependencies, events, on_time, watchdog
from herald.services.tasks import execute_run_task, finish_poll_delay, finish_poll_task, finish_run_task, send_task

log = logging.getLogger(__name__)

FANOUT_PAGE = 1000
# A store with deferred deliveries (Firestore) cannot tell cheaply after each delivery that
# none is open, so the finish task looks again: after about 2 s, 4 s, 8 s … then every minute.
FINISH_POLL_FIRST_SECONDS = 2.0
FINISH_POLL_MOST_SECONDS = 60.0


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
    """Create the run and queue its first step, as one unit of work; a repeat returns the
    existing run, and re-queues its first step if it never started (a run written whose
    task was not: gcp has no transaction across Firestore and Cloud Tasks)."""
    with c.atomic():
        created = c.store.create_run(run)
        existing = run if created else c.store.get_run(run.id)
        assert existing is not None
        if created or existing.status == RunStatus.PENDING:
            c.queue.enqueue(execute_run_task(run.id))  # a deterministic name: a repeat is a no-op
    if created:
        log.info("run created", extra={"run_id": run.id, "report_id": run.report_id, "trigger": run.trigger})
    else:
        log.info("run exists already", extra={"run_id": run.id, "report_id": run.report_id})
    return existing, created


def start_manual_run(
    c: Container,
    report_id: str,
    params: dict[str, str] | None = None,
    request_id: str | None = None,
    *,
    test_to: str | None = None,
) -> tuple[Run, bool]:
    """A run now. With ``test_to`` it is a *test*: rendered as usual, e-mailed only to that
    address (the report's owner when given ""), marked as a test, and kept out of the report's
    delivery figures, on-time record, monitor and owner alerts."""
    stored = c.store.get_report(report_id)
    if stored is None:
        raise UnknownReport(report_id)
    request = request_id or uuid.uuid4().hex
    if test_to is None:
        run_id = ids.manual_run_id(report_id, request)
        return submit_run(c, new_run(stored.definition, run_id, "manual", c.clock.now(), params=params))
    to = test_to or stored.definition.owner
    run_id = ids.manual_run_id(report_id, f"test\x1f{to.lower()}\x1f{request}")
    run = new_run(stored.definition, run_id, "test", c.clock.now(), params=params)
    return submit_run(c, run.model_copy(update={"test_to": to}))


# Claims on run steps ----------------------------------------------------------------------
@dataclass(frozen=True)
class StepOutcome:
    """What a run-step task answers: the run (None = no such run); ``retry_after`` = 503."""

    run: Run | None
    retry_after: float | None = None


NOT_NOW_SECONDS = 5.0  # a step that found the run claimed looks again this soon


@contextmanager
def claimed_step(c: Container, run_id: str, lease: timedelta) -> Iterator[tuple[Run | None, StepOutcome | None]]:
    """Claim the run for one step (execute or finish) with a lease, like a send claims its
    delivery: of concurrent redeliveries one works, the others answer 503 + Retry-After
    (claimed) or 200 (nothing left to do). The lease is released when the step ends."""
    now = c.clock.now()
    until = now + lease

    def claim(run: Run) -> dict[str, Any] | None:
        if run.lease_until is not None and run.lease_until > now:
            return None
        return {"lease_until": until}

    run = c.store.mutate_run(run_id, claim)
    if run is None:
        current = c.store.get_run(run_id)
        if current is None:
            yield None, StepOutcome(None)
        elif current.lease_until is not None and current.lease_until > now:
            wait = min(NOT_NOW_SECONDS, (current.lease_until - now).total_seconds() + 1)
            yield None, StepOutcome(current, retry_after=wait)
        else:
            yield None, StepOutcome(current)
        return
    try:
        yield run, None
    finally:
        c.store.mutate_run(run_id, lambda r: {"lease_until": None} if r.lease_until == until else None)


# The execute task ---------------------------------------------------------------------
def execute_run(c: Container, run_id: str) -> StepOutcome:
    """Advance a run as far as it can go now. Safe to call again at any point (redelivery)."""
    return _run_step(c, run_id, timedelta(seconds=c.settings.render_lease_seconds), _execute)


def _run_step(c: Container, run_id: str, lease: timedelta, step: Callable[[Container, Run], Run]) -> StepOutcome:
    """One run step under the run's claim: the winner works, a loser answers what it found."""
    with claimed_step(c, run_id, lease) as (run, busy):
        if busy is not None:
            return busy
        assert run is not None
        return StepOutcome(step(c, run))


def _execute(c: Container, run: Run) -> Run:
    run_id = run.id
    stored = c.store.get_report(run.report_id)
    if stored is None:
        # The owner is in the definition that is gone: #reporting-ops hears instead (never silent).
        with c.atomic():
            failed = c.store.transition_run(
                run_id,
                [RunStatus.PENDING, RunStatus.WAITING],
                RunStatus.FAILED,
                error="report definition was removed",
                finished_at=c.clock.now(),
            )
            if failed is not None:
                alerts.ops_message(
                    c,
                    the_id=alert_id("run", "definition-removed", run_id),
                    kind="run_failed",
                    report_id=run.report_id,
                    run_id=run_id,
                    subject=f"Run failed: report {run.report_id} ({run.period}) no longer exists",
                    body=f"Run {run_id} of report {run.report_id} could not start: its report definition was removed.",
                )
        return failed or run
    report = stored.definition
    if run.status == RunStatus.PENDING and report.heartbeat_url and not run.test_to:
        # /start as the run begins (before any dependency wait), so the monitor times the whole run.
        alerts.heartbeat(c, state="start", run=run, report_id=report.id, message=outcome_line(report, run))
    if run.status in (RunStatus.PENDING, RunStatus.WAITING):
        if report.depends_on:  # the dependency gate: wait, fail, skip, or go (maybe with a note)
            held = dependencies.hold(c, report, run)
            if held is not None:
                if held.status == RunStatus.SKIPPED:
                    _skipped(c, report, held, held.note or "a dependency policy skipped it", announce=False)
                return held
        busy = _render_slot(c, report, run)
        if busy is not None:
            return busy
        started = c.store.transition_run(
            run_id,
            [RunStatus.PENDING, RunStatus.WAITING],
            RunStatus.RENDERING,
            started_at=c.clock.now(),
            updated_at=c.clock.now(),
        )
        run = started or c.store.get_run(run_id) or run
    elif run.status == RunStatus.RENDERING:
        # A render retry (or a step redelivered after a crash): the slot was kept for it, but
        # its lease may have run out during the retry wait and another run may hold it now.
        busy = _render_slot(c, report, run)
        if busy is not None:
            return busy
    if run.status == RunStatus.RENDERING:
        try:
            run = render(c, report, run) or run
        finally:
            if run.status != RunStatus.RENDERING:  # rendered or failed; a run awaiting its retry keeps the slot
                _release_render_slot(c, report, run)
    if run.status == RunStatus.DELIVERING:
        fan_out(c, report, run)
    return run


# One render per report at a time (issue 12: a slow source never piles up renders) ----------
OVERLAP_RECHECK_SECONDS = 30.0
OVERLAP_ROUND_BASE = 10_000  # task rounds of overlap re-checks never collide with render retries'


def _render_slot(c: Container, report: ReportDefinition, run: Run) -> Run | None:
    """Claim the report's render slot for ``run``; None when it is ours. Otherwise the
    previous run of the same report is still rendering: queue behind it (look again soon)
    or skip this one, as the report's ``overlap`` says."""
    now = c.clock.now()
    until = now + timedelta(seconds=c.settings.render_lease_seconds)
    lock_id = notice_id("render-slot", report.id)
    if c.store.get_alert(lock_id) is None:
        c.store.add_alert(Alert(id=lock_id, kind="render_slot", target="", subject="", body="", created_at=now))

    def claim(a: Alert) -> dict[str, Any] | None:
        holder, lease = a.params.get("run", ""), a.params.get("until", "")
        if holder and holder != run.id and lease and datetime.fromisoformat(lease) > now:
            return None
        return {"params": {"run": run.id, "until": until.isoformat()}}

    if c.store.mutate_alert(lock_id, claim) is not None:
        return None
    lock = c.store.get_alert(lock_id)
    previous = lock.params.get("run", "") if lock else ""
    holder = c.store.get_run(previous) if previous else None
    # Taken over only from a run past rendering that did not let go (a crash after its render):
    # a holder still pending or waiting has claimed the slot and is about to render.
    if holder is None or holder.status not in (RunStatus.PENDING, RunStatus.WAITING, RunStatus.RENDERING):

        def take_over(a: Alert) -> dict[str, Any] | None:
            return {"params": {"run": run.id, "until": until.isoformat()}} if a.params.get("run") == previous else None

        if c.store.mutate_alert(lock_id, take_over) is not None:
            return None
    if report.overlap == "skip" and run.status != RunStatus.RENDERING:  # a started run is never skipped: it waits
        skipped = c.store.transition_run(
            run.id,
            [RunStatus.PENDING, RunStatus.WAITING],
            RunStatus.SKIPPED,
            note=f"Skipped: the previous run {previous} of this report was still rendering (overlap: skip)",
            finished_at=now,
            updated_at=now,
        )
        if skipped is not None:
            _skipped(c, report, skipped, skipped.note, announce=True)
        return skipped or c.store.get_run(run.id) or run
    c.store.update_run(run.id, updated_at=now)  # waiting its turn is progress: the reconciler leaves it be
    window = OVERLAP_ROUND_BASE + int(now.timestamp() // OVERLAP_RECHECK_SECONDS)  # one task name per window
    c.queue.enqueue(execute_run_task(run.id, eta=now + timedelta(seconds=OVERLAP_RECHECK_SECONDS), round_=window))
    log.info("render queued behind the report's previous run", extra={"run_id": run.id, "previous": previous})
    return run


def _release_render_slot(c: Container, report: ReportDefinition, run: Run) -> None:
    lock_id = notice_id("render-slot", report.id)
    c.store.mutate_alert(lock_id, lambda a: {"params": {}} if a.params.get("run") == run.id else None)


def _skipped(c: Container, report: ReportDefinition, run: Run, reason: str, *, announce: bool) -> None:
    """A deliberate skip is said, not left silent: the monitor gets its *success* ping with
    the reason (a policy decision is not an outage, and no one should be paged for it), and
    an overlap skip is announced in the ops channel."""
    if report.heartbeat_url:
        alerts.heartbeat(c, state="success", run=run, report_id=report.id, message=f"skipped: {reason}")
    if announce:
        alerts.ops_message(
            c,
            the_id=alert_id("watchdog", "skipped", run.id),
            kind="skipped_run",
            report_id=report.id,
            run_id=run.id,
            subject=f"Skipped: {report.name} ({run.period})",
            body=reason,
        )


def render(c: Container, report: ReportDefinition, run: Run) -> Run | None:
    summary = render_summary(report.summary, name=report.name, period=run.period, rows=0, params=run.params)
    request = RenderRequest(definition=report, run_id=run.id, period=run.period, params=run.params, summary=summary)
    try:
        rendered = c.source.render(request)
        if not rendered.data:
            raise RenderError("the source produced an empty report")
    except RenderError as exc:
        log.error("render failed", extra={"run_id": run.id, "report_id": report.id, "error": str(exc)})
        return _fail_run(c, run, f"render failed: {exc}")
    except Exception as exc:  # not the source's verdict: a bug or an outage. Transient, with a limit.
        return _render_crashed(c, report, run, exc)
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
        error="",  # an earlier attempt's error is history now
        updated_at=c.clock.now(),
    )


def _fail_run(c: Container, run: Run, error: str) -> Run | None:
    """A run that cannot go on: failed, and its finish step (owner alert, ping) queued with it."""
    now = c.clock.now()
    with c.atomic():
        failed = c.store.transition_run(
            run.id, [RunStatus.RENDERING], RunStatus.FAILED, error=error, finished_at=now, updated_at=now
        )
        if failed is not None:
            c.queue.enqueue(finish_run_task(run.id))
    return failed


def _render_crashed(c: Container, report: ReportDefinition, run: Run, exc: Exception) -> Run | None:
    attempt = run.step_attempts + 1
    log.exception(
        "render raised an unexpected error",
        extra={"run_id": run.id, "report_id": report.id, "attempt": attempt},
    )
    reason = f"{type(exc).__name__}: {exc}"
    delay = c.retry.delay_after(attempt)
    if delay is None:
        return _fail_run(c, run, f"render failed after {attempt} attempts: {reason}")
    now = c.clock.now()
    with c.atomic():
        # In ``error`` (operators see it), never in ``note``: the note is in every recipient's message.
        c.store.update_run(run.id, step_attempts=attempt, error=f"render attempt {attempt} failed: {reason}")
        c.queue.enqueue(execute_run_task(run.id, eta=now + delay, round_=attempt))
    return c.store.get_run(run.id)


def _targets(report: ReportDefinition, run: Run) -> list[tuple[str, str]]:
    """(channel, recipient) pairs of the run, each once (addresses compared case-insensitively)."""
    targets = report.recipients.targets() + [("email", e) for e in run.extra_recipients]
    if run.test_to:  # a test goes to its one address, whatever the report's recipients are
        targets = [("email", run.test_to)]
    seen: set[tuple[str, str]] = set()
    unique = []
    for channel, recipient in targets:
        if (channel, recipient.lower()) not in seen:
            seen.add((channel, recipient.lower()))
            unique.append((channel, recipient))
    return unique


def _deliveries_for(
    c: Container, report: ReportDefinition, run: Run, targets: list[tuple[str, str]], suppressed: set[str]
) -> list[Delivery]:
    now = c.clock.now()
    return [
        Delivery(
            id=ids.delivery_id(run.id, channel, recipient),
            run_id=run.id,
            report_id=report.id,
            channel=channel,
            recipient=recipient,
            status=DeliveryStatus.SUPPRESSED
            if channel == "email" and recipient.lower() in suppressed
            else DeliveryStatus.QUEUED,
            test=bool(run.test_to),
            link_token=secrets.token_urlsafe(24),  # 192 bits: an unguessable capability
            created_at=now,
            updated_at=now,
        )
        for channel, recipient in targets
    ]


def fan_out(c: Container, report: ReportDefinition, run: Run) -> int:
    """Create one delivery and one send task per (channel, recipient); idempotent. Each
    page of FANOUT_PAGE deliveries commits with its send tasks (one transaction on the
    embedded backend), so a 100,000-recipient run never holds them all at once."""
    targets = _targets(report, run)
    suppressed = c.store.suppressed_among([r for ch, r in targets if ch == "email"], report.id)
    if run.recipients_total != len(targets):
        c.store.update_run(run.id, recipients_total=len(targets))
    created = queued = 0
    redelivered = False
    for start in range(0, len(targets), FANOUT_PAGE):
        page = _deliveries_for(c, report, run, targets[start : start + FANOUT_PAGE], suppressed)
        with c.atomic():
            new = c.store.create_deliveries(page)
            if new == len(page):  # all new: no need to read them back
                queued += c.queue.enqueue_many([_first_send(c, d) for d in page if d.status == DeliveryStatus.QUEUED])
            else:
                redelivered = True
        created += new
    if redelivered:  # a redelivered task: (re)queue whatever still waits for its first attempt
        queued += _requeue_waiting(c, run.id)
    log.info("fan-out", extra={"run_id": run.id, "deliveries": len(targets), "new": created, "tasks": queued})
    if not c.store.has_open_deliveries(run.id):
        c.queue.enqueue(finish_run_task(run.id))
    elif c.store.deferred_deliveries:
        _poll_finish(c, run.id, 0)
    return created


def _first_send(c: Container, d: Delivery) -> Any:
    # A store that makes the delivery's record at its first claim gets it from the task.
    return send_task(d.id, 0, seed=d if c.store.deferred_deliveries else None)


def _poll_finish(c: Container, run_id: str, polls: int) -> None:
    # The eta is rounded to a multiple of the delay (so the next look comes 0.5 to 1.5
    # delays later): chains at the same step — a look retried after it queued the next, the
    # reconciler's restart — ask for the same task name, and at the longest delay every
    # chain looks at the same whole minutes, so chains that met once stay one.
    step = finish_poll_delay(polls, FINISH_POLL_FIRST_SECONDS, FINISH_POLL_MOST_SECONDS).total_seconds()
    at = (c.clock.now() + timedelta(seconds=step)).timestamp()
    eta = datetime.fromtimestamp(math.floor(at / step + 0.5) * step, UTC)
    c.queue.enqueue(finish_poll_task(run_id, polls, eta))


def _requeue_waiting(c: Container, run_id: str) -> int:
    waiting = pages(
        lambda cursor: c.store.list_deliveries(
            run_id=run_id, status=DeliveryStatus.QUEUED, limit=FANOUT_PAGE, cursor=cursor
        )
    )
    return sum(c.queue.enqueue_many([_first_send(c, d) for d in items]) for items in waiting)


# The finish task ----------------------------------------------------------------------
def finish_run(c: Container, run_id: str, polls: int = 0) -> StepOutcome:
    """Settle a run once no delivery is open; alert and ping exactly once (notifications).
    ``polls``: how many times a poll chain looked already (stores with deferred deliveries)."""
    return _run_step(c, run_id, c.lease, lambda c, run: _finish(c, run, polls))


def _finish(c: Container, run: Run, polls: int = 0) -> Run:
    run_id = run.id
    counts: dict[str, int] = {}
    settled_here = run.status == RunStatus.FAILED and bool(run.error)  # failed before delivery (render)
    if run.status == RunStatus.DELIVERING:
        if c.store.has_open_deliveries(run_id):
            if c.store.deferred_deliveries:  # nobody else looks: look again later
                _poll_finish(c, run_id, polls + 1)
            return run
        counts = c.store.delivery_counts(run_id)
        failed = sum(n for s, n in counts.items() if s in DELIVERY_NOT_DELIVERED)
        sent = sum(n for s, n in counts.items() if s not in DELIVERY_NOT_DELIVERED and s != DeliveryStatus.SUPPRESSED)
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
    if run.test_to:  # a test run tells only the person who asked (the CLI, the admin page)
        log.info("test run finished", extra={"run_id": run_id, "report_id": run.report_id, "status": str(run.status)})
        return run
    if settled_here:  # at-least-once (a redelivered finish task may repeat it); subscribers dedupe by event_id
        events.run_completed(c, run, counts)
        on_time.record_outcome(c, report, run)
    # Every side effect below is a notification with an id of its own: a repeat creates nothing.
    watchdog.note_recovery(c, report, run)  # only if the watchdog had called this slot late
    if run.status in (RunStatus.PARTIAL, RunStatus.FAILED):
        _alert_failures(c, report, run)
    if report.heartbeat_url:
        state: HeartbeatState = "success" if run.status == RunStatus.SUCCEEDED else "fail"
        alerts.heartbeat(c, state=state, run=run, report_id=report.id, message=outcome_line(report, run, counts))
    log.info("run finished", extra={"run_id": run_id, "report_id": run.report_id, "status": str(run.status)})
    return run


def outcome_line(report: ReportDefinition, run: Run, counts: dict[str, int] | None = None) -> str:
    """One line a monitor's log shows: report, slot or period, status, counts, error."""
    when = run.slot.strftime("%Y-%m-%d %H:%M UTC") if run.slot else run.period
    parts = [f"{report.name} ({report.id}) {when}: {run.status}"]
    if counts:
        parts.append(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if run.error:
        parts.append(f"error: {run.error}")
    return "; ".join(parts)


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
        f"- {d.recipient} ({d.channel}): {_why(d, status)}"
        for status in sorted(DELIVERY_NOT_DELIVERED)
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


def _why(d: Delivery, status: DeliveryStatus) -> str:
    if status == DeliveryStatus.UNKNOWN:  # never re-sent on its own: resend-to-failed offers it
        return f"outcome unknown, not re-sent automatically ({d.last_error or 'no provider event can confirm it'})"
    return d.last_error or str(status)


def run_view(run: Run, counts: dict[str, int]) -> dict[str, Any]:
    return {**run.to_doc(), "deliveries": counts}
