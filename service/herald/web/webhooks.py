"""SendGrid's Event Webhook: ``POST /webhooks/sendgrid`` (public, ECDSA-signed).

SendGrid signs ``timestamp + raw body`` with its P-256 key (Signed Event Webhook,
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features)
and sends ``X-Twilio-Email-Event-Webhook-Signature`` (base64 DER) and
``X-Twilio-Email-Event-Webhook-Timestamp`` (unix seconds). The timestamp is inside the
signature, so refusing one far from now (settings.sendgrid_webhook_tolerance_seconds,
either direction) stops a captured request from being replayed later.

Status contract (SendGrid retries any non-2xx for up to 24 hours):
- 200 ``{received, applied, duplicates, unmatched, ignored, ...}``: the batch is applied;
  duplicates and unknown event types are normal and counted;
- 400 the body is not UTF-8 JSON, or not a list of events;
- 401 signature or timestamp header missing; 403 signature does not verify, or the
  timestamp is malformed or outside the tolerance. Nothing is read or written before
  the signature verifies;
- 503 no verification key is configured (refuse, never accept unsigned events).
"""

from __future__ import annotations

import binascii
import json
import logging
from functools import lru_cache
from typing import Any

from flask import Blueprint, jsonify, request
from sendgrid.helpers.eventwebhook import EventWebhook

from herald.domain.strict import strict_int
from herald.services import feedback
from herald.web.auth import container
from herald.web.errors import error

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key)  # parses the key once, not per request


def _verified(public_key: str, body: str, signature: str, timestamp: str) -> bool:
    try:
        return bool(_verifier(public_key).verify_signature(body, signature, timestamp))
    except (ValueError, binascii.Error, TypeError):  # not base64, not DER: a bad signature, not a crash
        return False


@bp.post("/webhooks/sendgrid")
def sendgrid_events() -> Any:
    """A batch of SendGrid events. 200 / 400 / 401 / 403 / 503 (see the module docstring)."""
    c = container()
    public_key = c.settings.sendgrid_webhook_public_key
    if not public_key:
        log.error("SendGrid event refused: HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        return error(503, "event webhook verification key not configured")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        return error(401, f"unsigned: {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    stamped = strict_int(timestamp)
    if stamped is None or not signature.isascii():
        return error(403, "malformed signature or timestamp")
    skew = abs(c.clock.now().timestamp() - stamped)
    if skew > c.settings.sendgrid_webhook_tolerance_seconds:
        log.warning("stale SendGrid event batch refused", extra={"skew_seconds": round(skew)})
        return error(403, "signature timestamp outside the tolerance")
    try:
        body = request.get_data(cache=False).decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "body is not UTF-8")
    if not _verified(public_key, body, signature, timestamp):
        log.warning("SendGrid event signature mismatch")
        return error(403, "signature does not verify")
    try:
        events = json.loads(body)
    except ValueError:
        return error(400, "body is not JSON")
    if not isinstance(events, list):
        return error(400, "body must be a JSON list of events")
    result = feedback.ingest(c, events)
    return jsonify(result.to_doc())
