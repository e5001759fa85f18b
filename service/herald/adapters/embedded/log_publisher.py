"""The embedded backend's event publisher: events go to the log (and stay in memory
for tests), since nothing outside the process subscribes to a laptop's Herald."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from herald.ports.events import PublishError

log = logging.getLogger(__name__)


class LogPublisher:
    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self.published: list[tuple[str, dict[str, Any], str | None]] = []
        self._lock = threading.Lock()

    def publish(self, topic_key: str, event: dict[str, Any], ordering_key: str | None = None) -> None:
        try:
            text = json.dumps(event, sort_keys=True)
        except (TypeError, ValueError) as exc:  # the same refusal as the Pub/Sub publisher
            raise PublishError(f"event for {topic_key!r} is not JSON: {exc}", permanent=True) from exc
        log.info("event %s %s%s", topic_key, text, f" (ordering key {ordering_key})" if ordering_key else "")
        with self._lock:
            self.published.append((topic_key, json.loads(text), ordering_key))
            del self.published[: -self.keep]
