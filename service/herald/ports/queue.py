"""The task queue port: one task per run step and per recipient send.

A task is an HTTP POST of a JSON body to one of Herald's own ``/tasks/...`` routes,
exactly as Cloud Tasks delivers it. Task names are deterministic; enqueueing a name
that exists (or existed) is a normal, logged success that returns False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Task:
    name: str
    path: str  # e.g. /tasks/deliveries/send
    payload: dict[str, Any] = field(default_factory=dict)
    eta: datetime | None = None  # None = as soon as possible


class TaskQueue(Protocol):
    def enqueue(self, task: Task) -> bool: ...
    def enqueue_many(self, tasks: Sequence[Task]) -> int:
        """Enqueue many (fan-out); return how many were new."""
        ...
