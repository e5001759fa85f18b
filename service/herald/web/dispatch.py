"""The embedded worker's way into the task routes: the same handlers Cloud Tasks calls."""

from __future__ import annotations

import threading

from flask import Flask
from flask.testing import FlaskClient

from herald.adapters.embedded.sqlite_queue import Dispatcher, DispatchResult
from herald.ports.queue import Task
from herald.web.auth import INTERNAL_HEADER, container, internal_token


def in_process_dispatcher(app: Flask) -> Dispatcher:
    with app.app_context():
        token = internal_token(container().secret)
    local = threading.local()

    def dispatch(task: Task) -> DispatchResult:
        client: FlaskClient | None = getattr(local, "client", None)
        if client is None:
            client = local.client = app.test_client()
        response = client.post(task.path, json=task.payload, headers={INTERNAL_HEADER: token})
        retry_after = response.headers.get("Retry-After")
        return DispatchResult(response.status_code, float(retry_after) if retry_after else None)

    return dispatch
