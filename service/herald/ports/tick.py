"""Is the tick itself alive? What the watchdog reads (Cloud Scheduler's job state on gcp,
the embedded ticker's last-tick file otherwise)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol


class TickState(Protocol):
    """What the watchdog needs of a tick health report (adapters/gcp/scheduler_health.TickHealth)."""

    @property
    def last_attempt_at(self) -> datetime | None: ...
    @property
    def last_status_ok(self) -> bool | None: ...
    @property
    def state(self) -> str: ...
    @property
    def last_status_message(self) -> str: ...
    def healthy(self, now: datetime, max_silence: timedelta) -> bool: ...
