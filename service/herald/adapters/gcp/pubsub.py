"""Pub/Sub: the push envelope Herald receives, and the publisher of Herald's events.

Push delivery POSTs a JSON envelope whose ``message.data`` is base64; Herald's
messages carry a JSON object there.
https://cloud.google.com/pubsub/docs/push#receive_push
An envelope that fails to parse will never parse (EnvelopeError): redelivery cannot
help, and the route says so to Pub/Sub deliberately.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry

from herald.ports.events import PublishError

if TYPE_CHECKING:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from herald.settings import Settings

log = logging.getLogger(__name__)

# RFC 3339 "Zulu" with up to nine fractional digits, e.g. 2014-10-02T15:01:23.045123456Z
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.ResourceExhausted,
    gexc.Aborted,
    gexc.InternalServerError,
)


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


def build_publisher_client(emulator_host: str = "") -> pubsub_v1.PublisherClient:
    """A publisher with message ordering enabled; with an emulator host, plain gRPC."""
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    if emulator_host:
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        transport = PublisherGrpcTransport(channel=grpc.insecure_channel(emulator_host))
        return pubsub_v1.PublisherClient(publisher_options=options, transport=transport)
    return pubsub_v1.PublisherClient(publisher_options=options)


class PubSubPublisher:
    def __init__(self, client: Any, project: str, topics: Mapping[str, str], timeout: float = 10.0) -> None:
        self.client = client
        self.topics = {
            key: topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"
            for key, topic in topics.items()
        }
        self.timeout = timeout
        self.retry = gretry.Retry(predicate=gretry.if_exception_type(*_TRANSIENT), timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings, client: Any = None) -> PubSubPublisher:
        return cls(
            client if client is not None else build_publisher_client(settings.pubsub_emulator_host),
            settings.gcp_project,
            settings.pubsub_topics,
            timeout=settings.pubsub_publish_timeout_seconds,
        )

    def publish(self, topic_key: str, event: dict[str, Any], ordering_key: str | None = None) -> None:
        topic = self.topics.get(topic_key)
        if topic is None:
            raise PublishError(f"no topic configured for {topic_key!r}", permanent=True)
        try:
            data = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        except (TypeError, ValueError) as exc:
            raise PublishError(f"event for {topic_key!r} is not JSON: {exc}", permanent=True) from exc
        attributes = {"type": event["type"]} if isinstance(event.get("type"), str) else {}
        try:
            future = self.client.publish(
                topic, data, ordering_key=ordering_key or "", retry=self.retry, timeout=self.timeout, **attributes
            )
            message_id = future.result(timeout=self.timeout)
        except (FutureTimeout, TimeoutError) as exc:
            self._resume(topic, ordering_key)
            raise PublishError(f"publishing to {topic} timed out (it may still be published)", permanent=False) from exc
        except gexc.GoogleAPICallError as exc:
            self._resume(topic, ordering_key)
            raise PublishError(f"publishing to {topic}: {exc}", permanent=not isinstance(exc, _TRANSIENT)) from exc
        except gexc.RetryError as exc:
            self._resume(topic, ordering_key)
            raise PublishError(f"publishing to {topic} kept failing: {exc}", permanent=False) from exc
        log.info("published %s to %s as %s", attributes.get("type", "event"), topic, message_id)

    def _resume(self, topic: str, ordering_key: str | None) -> None:
        # After a failure the client pauses the ordering key until told to resume:
        # https://cloud.google.com/pubsub/docs/ordering#resume_publishing
        if ordering_key:
            self.client.resume_publish(topic, ordering_key)
