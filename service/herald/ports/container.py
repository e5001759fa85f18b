"""The bundle of ports every service takes. The composition root (herald.bootstrap) fills
it with adapters; services and handlers only ever see the ports."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from herald.domain.retry import RetryPolicy
from herald.ports.blobs import BlobStore
from herald.ports.clock import Clock
from herald.ports.events import DiscardingPublisher, EventPublisher
from herald.ports.heartbeat import Heartbeat
from herald.ports.messages import Chat, Mailer
from herald.ports.queue import TaskQueue
from herald.ports.sources import Source
from herald.ports.store import Store
from herald.ports.tick import TickState
from herald.settings import Settings


@dataclass
class Container:
    settings: Settings
    clock: Clock
    store: Store
    queue: TaskQueue
    blobs: BlobStore
    mailer: Mailer
    chat: Chat
    source: Source
    heartbeat: Heartbeat
    secret: bytes
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Herald's own events (run completed, delivery failed): Pub/Sub on gcp, the log otherwise.
    events: EventPublisher = field(default_factory=DiscardingPublisher)
    # Is the tick itself alive? gcp: the Cloud Scheduler tick job's state (for the watchdog);
    # None on the embedded backend, whose ticker is in-process.
    tick_health: Callable[[], TickState] | None = None
    # One transaction around a state change and the tasks it implies. Embedded: the store
    # and the queue share one SQLite database, so both commit or neither does. gcp:
    # Firestore and Cloud Tasks cannot share one; the tick's reconciler re-enqueues work
    # that made no progress within its lease (services/reconcile.py).
    atomic: Callable[[], AbstractContextManager[Any]] = nullcontext

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)
