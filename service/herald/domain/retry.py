"""When to try a failed send again (ARCHITECTURE.md decision 4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Transient failures retry after ``delays`` (2, 8, 32 minutes by default).

    ``max_retries`` counts retries, not attempts: with 3 retries a delivery is
    attempted at most 4 times. A provider hint (``retry_after``) longer than the
    scheduled delay wins, so a rate limit is never hammered.
    """

    delays: tuple[float, ...] = (120.0, 480.0, 1920.0)
    max_retries: int = 3

    def delay_after(self, failed_attempt: int, retry_after: float | None = None) -> timedelta | None:
        """Delay before the next attempt after attempt ``failed_attempt`` (1-based) failed.

        ``None`` means the retries are exhausted.
        """
        if failed_attempt < 1:
            raise ValueError("attempts are counted from 1")
        if failed_attempt > self.max_retries:
            return None
        index = min(failed_attempt - 1, len(self.delays) - 1)
        seconds = max(self.delays[index], retry_after or 0.0)
        return timedelta(seconds=seconds)
