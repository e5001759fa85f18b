"""Fakes for Herald's own ports: they record state so tests assert on outcomes."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from herald.domain.errors import DeliveryError, RenderError
from herald.ports.heartbeat import HeartbeatState
from herald.ports.messages import ChatMessage, EmailMessage, SendResult
from herald.ports.queue import Task
from herald.ports.sources import Rendered, RenderRequest


class RecordingQueue:
    """A TaskQueue that keeps tasks (deduplicated by name) for tests to run by hand."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.pending: list[Task] = []

    def enqueue(self, task: Task) -> bool:
        if task.name in self.tasks:
            return False
        self.tasks[task.name] = task
        self.pending.append(task)
        return True

    def enqueue_many(self, tasks: Sequence[Task]) -> int:
        return sum(self.enqueue(t) for t in tasks)

    def take_due(self, now: datetime, path: str | None = None) -> list[Task]:
        due = [t for t in self.pending if (t.eta is None or t.eta <= now) and (path is None or t.path == path)]
        self.pending = [t for t in self.pending if t not in due]
        return due


class ScriptedMailer:
    """Sends succeed unless a script says otherwise: ``script[address] = [error, error, ...]``."""

    def __init__(self) -> None:
        self.sent: dict[str, list[EmailMessage]] = defaultdict(list)
        self.attempts: dict[str, list[datetime | None]] = defaultdict(list)
        self.script: dict[str, list[DeliveryError]] = {}
        self.clock: Any = None
        self._lock = threading.Lock()

    def send(self, message: EmailMessage) -> SendResult:
        with self._lock:
            self.attempts[message.to].append(self.clock.now() if self.clock else None)
            failures = self.script.get(message.to)
            if failures:
                error = failures[0] if failures[0].permanent else failures.pop(0)
                raise error
            self.sent[message.to].append(message)
            return SendResult(message_id=f"msg-{message.idempotency_key}")


class ScriptedChat:
    def __init__(self) -> None:
        self.posted: dict[str, list[ChatMessage]] = defaultdict(list)
        self.script: dict[str, list[DeliveryError]] = {}

    def post(self, message: ChatMessage) -> SendResult:
        failures = self.script.get(message.target)
        if failures:
            raise failures[0] if failures[0].permanent else failures.pop(0)
        self.posted[message.target].append(message)
        return SendResult(message_id=f"ts-{len(self.posted)}")


class StaticSource:
    def __init__(self, data: bytes = b"%PDF-1.4 test report", fail: str | None = None) -> None:
        self.data = data
        self.fail = fail
        self.renders: list[RenderRequest] = []

    def render(self, request: RenderRequest) -> Rendered:
        self.renders.append(request)
        if self.fail:
            raise RenderError(self.fail)
        return Rendered(self.data, "application/pdf", f"{request.definition.id}-{request.period}.pdf", rows=3)


class RecordingHeartbeat:
    """Acknowledges every ping unless ``script`` holds errors to raise first (in order)."""

    def __init__(self) -> None:
        self.pings: list[tuple[str, HeartbeatState, str]] = []
        self.messages: list[str] = []
        self.script: list[DeliveryError] = []

    def ping(self, url: str, state: HeartbeatState, run_id: str, message: str = "") -> None:
        if self.script:
            raise self.script.pop(0)
        self.pings.append((url, state, run_id))
        self.messages.append(message)
