"""Heartbeats to a job monitor (Healthchecks.io / Cronitor)."""

from __future__ import annotations

from typing import Literal, Protocol

HeartbeatState = Literal["start", "success", "fail"]


class Heartbeat(Protocol):
    def ping(self, url: str, state: HeartbeatState, run_id: str, message: str = "") -> None:
        """Tell the monitor; ``message`` is the run's outcome line (a Healthchecks POST body,
        Cronitor's ``message``). Raises DeliveryError (transient or permanent) when the
        monitor did not acknowledge: the notification that carries it retries."""
        ...
