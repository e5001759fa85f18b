"""Pub/Sub push intake: business events and upstream job completions.

Pub/Sub POSTs an envelope (https://cloud.google.com/pubsub/docs/push#receive_push);
any 2xx acknowledges the message, anything else is a nack and Pub/Sub redelivers it
with backoff. Status contract:

- 204: handled, or a redelivery of a message already handled (acknowledged).
- 400: the envelope or its data can never be handled (not JSON, bad base64, data not
  a JSON object, no source, no job). Logged at ERROR with the message id. Pub/Sub
  treats 400 as a nack, so the message is NOT dropped on the floor: after the
  subscription's max_delivery_attempts it moves to the dead-letter topic, whose
  ``-hold`` subscription keeps it for inspection and replay (terraform pubsub.tf,
  docs/deploy.md). Answering 2xx instead would lose it with only a log line to show.
- 401 / 403: not Pub/Sub's push invoker (web/auth.py); 503 + Retry-After: the handler
  is not available now; Pub/Sub retries.

De-duplication: Pub/Sub is at-least-once, so the handlers are idempotent by the event's
own id (a run per (report, source event id), a job status per (job, period)): a
redelivered message creates nothing twice. The message id is recorded
(``store.remember_events``, kind ``pubsub:<subscription>``; emulator ids restart at 1,
so ids are per subscription) once the message was handled, and a redelivery is logged
as one. The record is written after handling, never before: claiming the id first
would make a redelivery after a failed attempt look handled and lose the message, and
the store has no read-only "seen?" to skip the handler safely.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, request
from pydantic import ValidationError

from herald.ports.container import Container
from herald.web.auth import container, internal
from herald.web.errors import error
from herald.web.push_envelope import EnvelopeError, PushMessage, parse_push_envelope

log = logging.getLogger(__name__)

bp = Blueprint("pubsub", __name__)

_SOURCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RETRY_AFTER_SECONDS = 30


class NotHandled(Exception):
    """The message is well-formed but cannot be handled by this build (no handler yet)."""


def _handler(name: str) -> Callable[..., Any]:
    """helper services in herald.services.triggers (ingest_event, record_job_status)."""
    try:
        module = importlib.import_module("herald.services.triggers")
    except ModuleNotFoundError as exc:
        if exc.name != "herald.services.triggers":
            raise
        raise NotHandled(f"herald.services.triggers.{name} is not available") from exc
    handler = getattr(module, name, None)
    if handler is None:
        raise NotHandled(f"herald.services.triggers.{name} is not available")
    return handler  # type: ignore[no-any-return]


def _kind(message: PushMessage) -> str:
    return f"pubsub:{message.subscription or 'unknown'}"


def digest(event: dict[str, Any]) -> str:
    """A content digest of the event (canonical JSON), so a reused event id with other content shows."""
    return hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _refuse(reason: str, message_id: str | None = None) -> Any:
    log.error("pubsub push refused: %s", reason, extra={"message_id": message_id or "", "path": request.path})
    return error(400, reason)


def _envelope_id(body: bytes) -> str | None:
    """The message id of an envelope that did not parse, when one can still be read (for the log)."""
    try:
        found = json.loads(body).get("message", {}).get("messageId")
    except (ValueError, AttributeError, RecursionError):
        return None
    return found[:200] if isinstance(found, str) else None


def _intake(handle: Callable[[Container, PushMessage], Any]) -> Any:
    body = request.get_data(cache=False)
    try:
        message = parse_push_envelope(body)
    except EnvelopeError as exc:
        return _refuse(str(exc), _envelope_id(body))
    except RecursionError:  # base64 data nested past what json.loads can parse
        return _refuse("message data nested too deeply", _envelope_id(body))
    c = container()
    try:
        outcome = handle(c, message)
    except _BadMessage as exc:
        return _refuse(str(exc), message.message_id)
    except ValidationError as exc:
        # e.g. a job-completion record without a valid period: never handleable, dead-letter it
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        return _refuse(f"invalid message data: {problems}"[:500], message.message_id)
    except ValueError as exc:
        # The handlers' own "never handleable" errors carry a 4xx ``status`` (services.triggers
        # EventRejected: malformed event, reused id with other content): dead-letter them too.
        if not 400 <= getattr(exc, "status", 0) < 500:
            raise
        return _refuse(str(exc), message.message_id)
    except NotHandled as exc:
        log.error("pubsub push not handled: %s", exc, extra={"message_id": message.message_id})
        body, status = error(503, "not handled by this build; retry later")
        body.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return body, status
    first = c.store.remember_events(_kind(message), [message.message_id], c.clock.now())
    log.info(
        "pubsub push handled" if first else "pubsub push handled again (redelivery)",
        extra={"message_id": message.message_id, "subscription": message.subscription, "outcome": str(outcome)},
    )
    return "", 204


class _BadMessage(ValueError):
    """Well-formed envelope, but the data can never be handled."""


def _event_source(message: PushMessage, source: str | None) -> str:
    found = source or message.attributes.get("source") or message.data.get("source")
    if not isinstance(found, str) or not _SOURCE.match(found):
        raise _BadMessage("no valid event source (path, 'source' attribute or data field)")
    return found


@bp.post("/pubsub/events")
@bp.post("/pubsub/events/<source>")
@internal
def business_event(source: str | None = None) -> Any:
    """A business event (e.g. ``order.closed``) that may trigger reports. 204 / 400 / 503."""

    def handle(c: Container, message: PushMessage) -> Any:
        name = _event_source(message, source)
        return _handler("ingest_event")(c, name, message.data, digest(message.data))

    return _intake(handle)


@bp.post("/pubsub/job-status")
@internal
def job_status() -> Any:
    """An upstream job's completion record (e.g. the warehouse ETL). 204 / 400 / 503."""

    def handle(c: Container, message: PushMessage) -> Any:
        job = message.data.get("job")
        if not isinstance(job, str) or not job:
            raise _BadMessage("job status without a 'job'")
        return _handler("record_job_status")(c, message.data)

    return _intake(handle)
