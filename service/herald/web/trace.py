"""Cloud Logging trace correlation: each request's logs carry its trace id.

Cloud Run passes ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1``; herald.logs adds
``logging.googleapis.com/trace`` to every line logged while the request is handled.
https://cloud.google.com/run/docs/logging#correlate-logs
"""

from __future__ import annotations

import re
from contextvars import Token

from flask import Flask, g, request

from herald.logs import trace_context

_TRACE_ID = re.compile(r"^([0-9a-fA-F]{32})(?:/|;|$)")


def register(app: Flask) -> None:
    @app.before_request
    def _set_trace() -> None:
        match = _TRACE_ID.match(request.headers.get("X-Cloud-Trace-Context", ""))
        g.herald_trace_token = trace_context.set(match.group(1).lower() if match else None)

    @app.teardown_request
    def _clear_trace(_exc: BaseException | None) -> None:
        token: Token[str | None] | None = g.pop("herald_trace_token", None)
        if token is not None:
            trace_context.reset(token)
