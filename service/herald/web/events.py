"""Business-event webhooks: ``POST /webhooks/events/<source>`` (public, HMAC-signed).

A sender signs each request with its source's secret (settings.event_secrets):

    X-Herald-Timestamp: <unix seconds>
    X-Herald-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Several ``v1=`` values (comma-separated) may be sent while a secret is rotated; one
match is enough. The timestamp is inside the signature and must be within
settings.event_tolerance_seconds of now, so a captured request cannot be replayed later.
Body: ``{"id": "...", "type": "deal.closed", "occurred_at": "...", "data": {...}}``.

Status contract:
- 202 ``{"event_id", "runs": [...], "replayed": false}``: accepted, runs started (maybe none);
- 200 the same body with ``"replayed": true``: this event id was received before with
  the same content; the runs are those of the first delivery, nothing new is started;
- 400 malformed (not JSON, no id or type, data not an object); 401 missing or malformed
  signature headers, or a timestamp outside the tolerance; 403 the signature does not
  match; 404 unknown source (no secret configured); 413 body over 1 MiB;
- 422 the same event id with different content, or a matching report needs a payload
  field the event lacks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any

from flask import Blueprint, jsonify, request

from herald.domain.strict import same_secret, strict_int
from herald.services import triggers
from herald.web.auth import container
from herald.web.errors import error

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

TIMESTAMP_HEADER = "X-Herald-Timestamp"
SIGNATURE_HEADER = "X-Herald-Signature"
MAX_BODY = 1024 * 1024
_SOURCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Herald-Signature`` value a sender computes (examples/send_event.py does the same)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def _secrets(source: str) -> list[str]:
    configured = container().settings.event_secrets.get(source) if _SOURCE.match(source) else None
    if configured is None:
        return []
    return [configured] if isinstance(configured, str) else [s for s in configured if s]


def _offered(header: str) -> list[str]:
    return [part.strip() for part in header.split(",") if part.strip().startswith("v1=")]


@bp.post("/webhooks/events/<source>")
def receive(source: str) -> Any:
    """A business event from ``source``. 202 / 200 (replay) / 400 / 401 / 403 / 404 / 413 / 422."""
    secrets = _secrets(source)
    if not secrets:
        return error(404, "unknown event source", source=source)
    if (request.content_length or 0) > MAX_BODY:
        return error(413, "event body over 1 MiB")
    body = request.get_data(cache=False)
    if len(body) > MAX_BODY:
        return error(413, "event body over 1 MiB")
    stamp = request.headers.get(TIMESTAMP_HEADER, "")
    offered = _offered(request.headers.get(SIGNATURE_HEADER, ""))
    stamped = strict_int(stamp)
    if stamped is None or not offered:
        return error(401, f"sign the request: {TIMESTAMP_HEADER} (unix seconds) and {SIGNATURE_HEADER} (v1=<hex>)")
    expected = [signature(secret, stamp, body) for secret in secrets]
    if not any(same_secret(o, e) for o in offered for e in expected):
        log.warning("event signature mismatch", extra={"source": source})
        return error(403, "signature does not match")
    c = container()
    skew = abs(c.clock.now().timestamp() - stamped)
    if skew > c.settings.event_tolerance_seconds:
        log.warning("stale event refused", extra={"source": source, "skew_seconds": skew})
        return error(401, "timestamp outside the tolerance; sign the request again with the current time")
    try:
        event = json.loads(body)
    except ValueError:
        return error(400, "body is not JSON")
    try:
        outcome = triggers.ingest(c, source, event)
    except triggers.EventRejected as exc:
        return error(exc.status, str(exc), source=source)
    answer = {"event_id": outcome.event_id, "runs": outcome.run_ids, "replayed": outcome.replayed}
    return jsonify(answer), 200 if outcome.replayed else 202
