"""JSON errors with the right 4xx status, and never a traceback to the caller."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from herald.domain.errors import StorageUnavailable

log = logging.getLogger(__name__)


def error(status: int, message: str, **details: Any) -> tuple[Any, int]:
    return jsonify({"error": message, **details}), status


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in item["loc"]) or "(body)", "problem": item["msg"]} for item in exc.errors()
    ]


def register(app: Flask) -> None:
    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError) -> Any:
        return error(400, "invalid request", details=validation_details(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        if request.path.startswith(("/l/", "/admin", "/unsubscribe")) and exc.code == 404:
            return "Not found", 404, {"Content-Type": "text/plain; charset=utf-8"}
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Any:
        # JSON nested too deeply for a parser that security.json_too_deep did not see.
        log.warning("request refused: input nested too deeply", extra={"path": request.path})
        return error(400, "input nested too deeply")

    @app.errorhandler(StorageUnavailable)
    def _storage(exc: StorageUnavailable) -> Any:
        # A full disk or a store outage passes: the caller (a queue, a person) tries again.
        log.error("storage unavailable", extra={"path": request.path, "error": exc.message})
        body, status = error(503, "storage unavailable; try again shortly")
        body.headers["Retry-After"] = str(max(1, int(exc.retry_after)))
        return body, status

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        # The trace goes to the log only; the caller gets a JSON line and no internals.
        log.exception("unhandled error", extra={"path": request.path})
        return error(500, "internal error; it has been logged")
