"""Pub/Sub: the publisher of Herald's own events (run completed, delivery failed).

The push envelope Herald receives is parsed at the edge, in herald.web.push_envelope.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry

from herald.ports.events import PublishError

if TYPE_CHECKING:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from herald.settings import Settings

log = logging.getLogger(__name__)

# RFC 3339 "Zulu" with up to nine fractional digits, e.g. 2014-10-02T15:01:23.045123456Z
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.ResourceExhausted,
    gexc.Aborted,
    gexc.InternalServerError,
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
