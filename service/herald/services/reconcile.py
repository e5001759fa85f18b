"""The reconciler: no work without its task (ARCHITECTURE.md decision 9).

On the embedded backend a state change and the task it implies commit in one SQLite
transaction. On gcp, Firestore and Cloud Tasks cannot share one: a crash (or a failed
create_task) between the two writes leaves a run or a notification with no task to move
it. Each tick runs one pass that finds such work — no progress within its lease, past
``settings.reconcile_after_seconds`` — and queues it again under a deterministic name per
period, so concurrent passes queue it once. Every handler claims its subject, so a task
that turns out not to have been lost does nothing twice.

A run re-queued ``settings.reconcile_max_recoveries`` times without progress fails and
its owner is alerted: nothing stays in a non-final state past its leases and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from herald.domain.records import Alert, Delivery, Run
from herald.domain.states import DELIVERY_OPEN, DeliveryStatus, RunStatus
from herald.ports.container import Container
from herald.ports.queue import Task
from herald.ports.store import Page, pages
from herald.services.tasks import (
    EXECUTE_RUN,
    FINISH_RUN,
    SEND_DELIVERY,
    SEND_NOTIFICATION,
    finish_run_task,
    reconcile_task,
)

log = logging.getLogger(__name__)

PAGE = 200
ALERT_LOOKBACK = 50  # the newest alerts are the ones whose retries may still be running
STALLED_RUNS = (RunStatus.PENDING, RunStatus.WAITING, RunStatus.RENDERING, RunStatus.DELIVERING)


@dataclass
class ReconcileResult:
    runs: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.runs) + len(self.deliveries) + len(self.notifications) + len(self.failed)


def reconcile(c: Container, now: datetime | None = None) -> ReconcileResult:
    now = now or c.clock.now()
    after = timedelta(seconds=c.settings.reconcile_after_seconds)
    result = ReconcileResult()
    round_ = int(now.timestamp() // max(1.0, after.total_seconds()))  # one task name per subject and period
    tasks: list[Task] = []
    for status in STALLED_RUNS:
        for items in pages(_runs_in(c, status)):
            for run in items:
                tasks += _run(c, run, now, after, round_, result)
    for alert in c.store.list_alerts(limit=ALERT_LOOKBACK):
        tasks += _notification(alert, now, after, round_, result)
    if tasks:
        c.queue.enqueue_many(tasks)
    if result.total:
        log.warning(
            "reconciler re-queued stalled work",
            extra={
                "runs": len(result.runs),
                "deliveries": len(result.deliveries),
                "notifications": len(result.notifications),
                "failed": len(result.failed),
            },
        )
    return result


def _runs_in(c: Container, status: RunStatus) -> Callable[[str | None], Page]:
    return lambda cursor: c.store.list_runs(status=status, limit=PAGE, cursor=cursor)


def _stale(updated: datetime | None, lease_until: datetime | None, now: datetime, after: timedelta) -> bool:
    if lease_until is not None and lease_until > now:
        return False  # someone holds it
    return updated is None or now - updated > after


def _run(c: Container, run: Run, now: datetime, after: timedelta, round_: int, result: ReconcileResult) -> list[Task]:
    if run.status == RunStatus.WAITING:
        return []  # the dependency gate keeps its own re-check and deadline tasks
    if run.status == RunStatus.DELIVERING:
        return _delivering(c, run, now, after, round_, result)
    if not _stale(run.updated_at, run.lease_until, now, after):
        return []
    if run.recoveries >= c.settings.reconcile_max_recoveries:
        _give_up(c, run, now, result)
        return []
    c.store.update_run(run.id, recoveries=run.recoveries + 1, updated_at=now)
    result.runs.append(run.id)
    return [reconcile_task("run", run.id, round_, EXECUTE_RUN, {"run_id": run.id})]


def _delivering(
    c: Container, run: Run, now: datetime, after: timedelta, round_: int, result: ReconcileResult
) -> list[Task]:
    # The oldest page per open status: a stalled delivery is found, and a 100,000-recipient
    # fan-out in progress costs a few queries per pass, not a scan of every delivery.
    open_ = [
        d for status in DELIVERY_OPEN for d in c.store.list_deliveries(run_id=run.id, status=status, limit=PAGE).items
    ]
    if not open_:
        if _stale(run.updated_at, run.lease_until, now, after):  # every delivery is final: the finish was lost
            result.runs.append(run.id)
            return [reconcile_task("finish", run.id, round_, FINISH_RUN, {"run_id": run.id})]
        return []
    tasks = []
    for d in open_:
        if _delivery_stalled(d, now, after):
            result.deliveries.append(d.id)
            tasks.append(reconcile_task("send", d.id, round_, SEND_DELIVERY, {"delivery_id": d.id}))
    if tasks and c.store.deferred_deliveries:
        # Its finish is polled by a chain of tasks (services/runs.py), which may be lost with
        # the sends: one more look restarts it (a look too many finds the run open, and polls).
        tasks.append(reconcile_task("finish", run.id, round_, FINISH_RUN, {"run_id": run.id}))
    return tasks


def _delivery_stalled(d: Delivery, now: datetime, after: timedelta) -> bool:
    if d.status == DeliveryStatus.SENDING:
        return _stale(d.updated_at, d.lease_until, now, after)
    due = d.next_attempt_at or d.updated_at
    return now - due > after  # queued / retrying / reconciling, and its attempt is long overdue


def _notification(alert: Alert, now: datetime, after: timedelta, round_: int, result: ReconcileResult) -> list[Task]:
    tasks = []
    for channel, state in alert.channels.items():
        if state.status == "sending":
            stalled = state.lease_until is None or now - state.lease_until > after
        elif state.status == "pending":
            stalled = now - (state.next_attempt_at or alert.created_at) > after
        else:
            continue
        if stalled:
            result.notifications.append(f"{alert.id}/{channel}")
            payload = {"alert_id": alert.id, "channel": channel}
            tasks.append(reconcile_task("notify", f"{alert.id}/{channel}", round_, SEND_NOTIFICATION, payload))
    return tasks


def _give_up(c: Container, run: Run, now: datetime, result: ReconcileResult) -> None:
    reason = f"made no progress after {run.recoveries} recoveries (last state {run.status})"
    with c.atomic():
        failed = c.store.transition_run(
            run.id, [run.status], RunStatus.FAILED, error=reason, finished_at=now, updated_at=now, lease_until=None
        )
        if failed is not None:
            c.queue.enqueue(finish_run_task(run.id))  # the owner is alerted
    if failed is not None:
        log.error("run given up by the reconciler", extra={"run_id": run.id, "error": reason})
        result.failed.append(run.id)
