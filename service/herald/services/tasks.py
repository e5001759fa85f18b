"""The task routes and their deterministic names: the contract between services and queue."""

from __future__ import annotations

from datetime import datetime

from herald.domain.ids import task_name
from herald.ports.queue import Task

EXECUTE_RUN = "/tasks/runs/execute"
FINISH_RUN = "/tasks/runs/finish"
SEND_DELIVERY = "/tasks/deliveries/send"
SEND_NOTIFICATION = "/tasks/notifications/send"


def execute_run_task(run_id: str, eta: datetime | None = None, round_: int = 0) -> Task:
    return Task(task_name("run", run_id, round_), EXECUTE_RUN, {"run_id": run_id}, eta)


def release_run_task(run_id: str, job: str, period: str) -> Task:
    """Execute a waiting run now that ``job_status(job, period)`` arrived; one name per record."""
    return Task(task_name("release", f"{run_id}/{job}/{period}"), EXECUTE_RUN, {"run_id": run_id})


def finish_run_task(run_id: str) -> Task:
    return Task(task_name("finish", run_id), FINISH_RUN, {"run_id": run_id})


def send_task(delivery_id: str, attempt: int, eta: datetime | None = None) -> Task:
    """Attempt N+1 of a delivery; the name is unique per attempt so retries are new tasks."""
    return Task(task_name("send", delivery_id, attempt), SEND_DELIVERY, {"delivery_id": delivery_id}, eta)


def notify_task(alert_id: str, channel: str, attempt: int, eta: datetime | None = None) -> Task:
    """Attempt N+1 of one channel of a notification (owner alert, ops message, heartbeat)."""
    return Task(
        task_name("notify", f"{alert_id}/{channel}", attempt),
        SEND_NOTIFICATION,
        {"alert_id": alert_id, "channel": channel},
        eta,
    )


def reconcile_task(kind: str, subject_id: str, round_: int, path: str, payload: dict[str, str]) -> Task:
    """The reconciler's re-enqueue of stalled work: one name per subject and lease period."""
    return Task(task_name(f"reconcile-{kind}", subject_id, round_), path, payload)
