"""Heartbeats to a job monitor (Healthchecks.io / Cronitor). Never raise."""

from __future__ import annotations

from typing import Literal, Protocol

HeartbeatState = Literal["start", "success", "fail"]


class Heartbeat(Protocol):
    def ping(self, url: str, state: HeartbeatState, run_id: str) -> bool:
        """True when the monitor acknowledged; a failure is logged, never raised."""
        ...
