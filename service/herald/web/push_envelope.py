"""The body Pub/Sub push sends (https://cloud.google.com/pubsub/docs/push#receive_push):
an envelope with the message's id, base64 data, attributes and publish time. Parsed
here, at the edge, into a PushMessage; anything else is an EnvelopeError (400)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


class EnvelopeError(ValueError):
    """The push body is not a Pub/Sub envelope carrying a JSON object."""


@dataclass(frozen=True)
class PushMessage:
    message_id: str
    data: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)
    subscription: str = ""
    publish_time: datetime | None = None
    delivery_attempt: int | None = None  # set only with a dead-letter policy


def _timestamp(value: object) -> datetime | None:
    if value is None:
        return None
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        raise EnvelopeError(f"publishTime is not an RFC 3339 timestamp: {value!r}")
    whole, fraction, zone = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]  # datetime keeps microseconds, Pub/Sub sends up to nanoseconds
    try:
        return datetime.fromisoformat(f"{whole}.{micros}{'+00:00' if zone == 'Z' else zone}").astimezone(UTC)
    except ValueError as exc:
        raise EnvelopeError(f"publishTime out of range: {value!r}") from exc


def parse_push_envelope(body: bytes) -> PushMessage:
    """The message of a push request body; raises EnvelopeError for anything else."""
    try:
        envelope = json.loads(body)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise EnvelopeError("body is not JSON") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        raise EnvelopeError("no message object in the envelope")
    message: dict[str, Any] = envelope["message"]
    # Push sends both spellings of the id and time; either one is enough.
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise EnvelopeError("message has no id")
    raw = message.get("data")
    if not isinstance(raw, str) or not raw:
        raise EnvelopeError("message has no data")
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("message data is not base64") from exc
    try:
        data = json.loads(decoded)
    except ValueError as exc:
        raise EnvelopeError("message data is not JSON") from exc
    if not isinstance(data, dict):
        raise EnvelopeError("message data is not a JSON object")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise EnvelopeError("message attributes are not a string map")
    subscription = envelope.get("subscription", "")
    if not isinstance(subscription, str):
        raise EnvelopeError("subscription is not a string")
    attempt = envelope.get("deliveryAttempt")
    if attempt is not None and (not isinstance(attempt, int) or isinstance(attempt, bool)):
        raise EnvelopeError("deliveryAttempt is not an integer")
    return PushMessage(
        message_id=message_id,
        data=data,
        attributes=dict(attributes),
        subscription=subscription,
        publish_time=_timestamp(message.get("publishTime") or message.get("publish_time")),
        delivery_attempt=attempt,
    )
