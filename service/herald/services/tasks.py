"""The task routes and their deterministic names: the contract between services and queue."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from herald.domain.ids import task_name
from herald.domain.records import Delivery
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


def finish_poll_task(run_id: str, polls: int, eta: datetime) -> Task:
    """Look again whether a run is done (stores with deferred deliveries, services/runs.py).
    One name per run and second of its eta: looks at one eta are one task."""
    name = task_name("finish-poll", run_id, int(eta.timestamp()))
    return Task(name, FINISH_RUN, {"run_id": run_id, "polls": polls}, eta)


def finish_poll_delay(polls: int, first: float, most: float) -> timedelta:
    """2 s, 4 s, 8 s … up to ``most``: a short run settles at once, a long one costs few looks."""
    return timedelta(seconds=min(most, first * 2 ** min(polls, 30)))


def send_task(delivery_id: str, attempt: int, eta: datetime | None = None, seed: Delivery | None = None) -> Task:
    """Attempt N+1 of a delivery; the name is unique per attempt so retries are new tasks.
    ``seed``: the delivery as fanned out, for a store that makes its record at the first claim."""
    payload: dict[str, Any] = {"delivery_id": delivery_id}
    if seed is not None:
        payload["seed"] = seed.model_dump(mode="json")
    return Task(task_name("send", delivery_id, attempt), SEND_DELIVERY, payload, eta)


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
