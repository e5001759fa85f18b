"""Task and scheduler routes: what Cloud Tasks, Cloud Scheduler and the embedded worker call.

Status contract (the queue acts on it):
- 200: done, including "already done" and "lost a race to another worker";
- 503 + Retry-After: not now (a lease is held, or the attempt is not due yet);
- 400: malformed task body; 404: the subject does not exist. Neither is retried usefully.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from herald.domain.records import Delivery
from herald.ports.container import Container
from herald.services import delivery, notifications, runs, scheduling, watchdog
from herald.web.auth import container, internal
from herald.web.errors import error

bp = Blueprint("tasks", __name__)

_ID = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class RunTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    run_id: str = _ID


class FinishTask(RunTask):
    polls: int = Field(0, ge=0, le=10**9)  # how many times this run's finish looked already


class DeliveryTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    delivery_id: str = _ID
    seed: Delivery | None = None  # the delivery as fanned out (stores with deferred deliveries)


class NotificationTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    alert_id: str = _ID
    channel: Literal["email", "slack", "heartbeat"]


def _body(model: type[BaseModel]) -> Any:
    return model.model_validate(request.get_json(force=True, silent=False))


def _not_now(body: dict[str, Any], retry_after: float) -> Any:
    response = jsonify(body)
    response.status_code = 503
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _run_step(step: Callable[[Container, str], runs.StepOutcome]) -> Any:
    task = _body(RunTask)
    return _step_answer(task.run_id, step(container(), task.run_id))


def _step_answer(run_id: str, outcome: runs.StepOutcome) -> Any:
    run = outcome.run
    if run is None:
        return error(404, "no such run", run_id=run_id)
    body = {"run_id": run.id, "status": str(run.status)}
    if outcome.retry_after is not None:  # another worker holds this run's step: not an error
        return _not_now({**body, "claimed": True}, outcome.retry_after)
    return jsonify(body)


@bp.post("/tasks/runs/execute")
@internal
def execute_run() -> Any:
    return _run_step(runs.execute_run)


@bp.post("/tasks/runs/finish")
@internal
def finish_run() -> Any:
    task = _body(FinishTask)
    return _step_answer(task.run_id, runs.finish_run(container(), task.run_id, task.polls))


@bp.post("/tasks/deliveries/send")
@internal
def send_delivery() -> Any:
    task = _body(DeliveryTask)
    outcome = delivery.send_delivery(container(), task.delivery_id, task.seed)
    if outcome.status == "unknown":
        return error(404, "no such delivery", delivery_id=task.delivery_id)
    if outcome.retry_after is not None:
        return _not_now({"delivery_id": task.delivery_id, "status": outcome.status}, outcome.retry_after)
    return jsonify({"delivery_id": task.delivery_id, "status": outcome.status})


@bp.post("/tasks/notifications/send")
@internal
def send_notification() -> Any:
    """One channel of an owner alert, ops message or heartbeat ping (services/notifications.py)."""
    task = _body(NotificationTask)
    outcome = notifications.send_notification(container(), task.alert_id, task.channel)
    body = {"alert_id": task.alert_id, "channel": task.channel, "status": outcome.status}
    if outcome.status == "unknown":
        return error(404, "no such notification", alert_id=task.alert_id, channel=task.channel)
    if outcome.retry_after is not None:
        return _not_now(body, outcome.retry_after)
    return jsonify(body)


@bp.post("/scheduler/tick")
@internal
def tick() -> Any:
    """Cloud Scheduler's X-CloudScheduler-ScheduleTime is the tick's notion of now when present."""
    now = None
    scheduled = request.headers.get("X-CloudScheduler-ScheduleTime")
    if scheduled:
        try:
            now = datetime.fromisoformat(scheduled.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return error(400, "X-CloudScheduler-ScheduleTime is not an RFC 3339 time")
        now = max(now, container().clock.now())  # a late delivery of the tick still sees the present
    result = scheduling.tick(container(), now)
    body = {"reports": result.reports, "started": len(result.started), "missed": len(result.missed)}
    if result.failed:  # those reports' schedules did not advance: the next tick tries again
        return _not_now({**body, "failed": result.failed}, 30)
    return jsonify({**body, "reconciled": result.reconciled})


@bp.post("/scheduler/watchdog")
@internal
def run_watchdog() -> Any:
    """One watchdog pass (the in-process timer of `herald serve`, or a Cloud Scheduler job). 200."""
    result = watchdog.run_watchdog(container())
    return jsonify({"open": len(result.found), "new": len(result.new), "posted": result.posted})
