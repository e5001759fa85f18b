"""Herald's own events (run completed, delivery failed, ...) for other systems.

``topic_key`` is a logical name ("runs", "deliveries"); the adapter maps it to its
transport (a Pub/Sub topic on the gcp backend, the log on the embedded one). Events
are JSON objects. Publishing is at-least-once: subscribers de-duplicate by the
event's own id, which the caller puts in the event.
"""

from __future__ import annotations

from typing import Any, Protocol


class PublishError(Exception):
    """An event was not published. ``permanent`` is True when retrying cannot help
    (unknown topic key, event not JSON), False when it may (transport unavailable,
    timeout: the event may even have been published, hence at-least-once)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class EventPublisher(Protocol):
    def publish(self, topic_key: str, event: dict[str, Any], ordering_key: str | None = None) -> None:
        """Publish one event; returns once the transport accepted it, else raises PublishError."""
        ...


class DiscardingPublisher:
    """No subscriber: events are dropped (a container built without an event adapter, e.g. in tests)."""

    def publish(self, topic_key: str, event: dict[str, Any], ordering_key: str | None = None) -> None:
        return None
