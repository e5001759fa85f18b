"""The embedded worker's way into the task routes: the same handlers Cloud Tasks calls.

Sends, the bulk of all tasks, skip the HTTP layer (issue 14): a send is the route's one
service call, and the route's answer is rebuilt here status for status (404 no such
delivery, 503 + Retry-After not now or storage unavailable, 200 otherwise), so the
queue settles it exactly as it would the route's response. Every other task goes
through the Flask test client to its route, as Cloud Tasks would post it.
"""

from __future__ import annotations

import math
import threading

from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError

from herald.adapters.embedded.sqlite_queue import Dispatcher, DispatchResult, Pool, QueueWorkers, SQLiteQueue
from herald.domain.errors import StorageUnavailable
from herald.ports.container import Container
from herald.ports.queue import Task
from herald.services import delivery
from herald.services.tasks import EXECUTE_RUN, SEND_DELIVERY
from herald.settings import Settings
from herald.web.auth import INTERNAL_HEADER, container, internal_token
from herald.web.tasks import DeliveryTask


def in_process_dispatcher(app: Flask, *, direct_sends: bool = True) -> Dispatcher:
    with app.app_context():
        c = container()
        token = internal_token(c.secret)
    local = threading.local()

    def through_route(task: Task) -> DispatchResult:
        client: FlaskClient | None = getattr(local, "client", None)
        if client is None:
            client = local.client = app.test_client()
        response = client.post(task.path, json=task.payload, headers={INTERNAL_HEADER: token})
        retry_after = response.headers.get("Retry-After")
        return DispatchResult(response.status_code, float(retry_after) if retry_after else None)

    def dispatch(task: Task) -> DispatchResult:
        if direct_sends and task.path == SEND_DELIVERY:
            return send_directly(c, task)
        return through_route(task)

    return dispatch


def send_directly(c: Container, task: Task) -> DispatchResult:
    """What ``POST /tasks/deliveries/send`` answers (web/tasks.py), without HTTP."""
    try:
        body = DeliveryTask.model_validate(task.payload)
    except ValidationError:
        return DispatchResult(400)
    try:
        outcome = delivery.send_delivery(c, body.delivery_id)
    except StorageUnavailable as exc:  # web/errors.py: 503 + Retry-After
        return DispatchResult(503, float(max(1, int(exc.retry_after))))
    if outcome.status == "unknown":
        return DispatchResult(404)
    if outcome.retry_after is not None:  # web/tasks.py _not_now
        return DispatchResult(503, float(max(1, math.ceil(outcome.retry_after))))
    return DispatchResult(200)


RENDER_POOL = Pool(paths=(EXECUTE_RUN,))  # renders: a hung source holds only these threads
MAIN_POOL = Pool(exclude=(EXECUTE_RUN,))  # sends, finish steps, notifications, everything else


def worker_pools(queue: SQLiteQueue, dispatch: Dispatcher, settings: Settings) -> list[QueueWorkers]:
    """`herald serve`'s worker pools: renders on ``render_threads`` of their own, the rest
    on ``worker_threads`` (none when it is 0: tests that drive the queue themselves)."""
    if settings.worker_threads <= 0:
        return []
    return [
        QueueWorkers(queue, dispatch, settings.render_threads, RENDER_POOL, name="render"),
        QueueWorkers(queue, dispatch, settings.worker_threads, MAIN_POOL, name="worker"),
    ]
