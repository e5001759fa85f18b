"""Is the Cloud Scheduler tick job itself alive? (for the watchdog)

The tick drives every schedule, so the watchdog asks Cloud Scheduler for the tick
job: its state, when it last attempted a run, and what the target answered.
https://cloud.google.com/scheduler/docs/reference/rpc/google.cloud.scheduler.v1#job
``status`` is a google.rpc.Status: code 0 (OK) when the target answered 2xx.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry

if TYPE_CHECKING:
    from google.cloud import scheduler_v1

    from herald.settings import Settings

log = logging.getLogger(__name__)

_TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted)


class SchedulerHealthError(Exception):
    """The tick job's state could not be read (not the same as an unhealthy tick)."""


@dataclass(frozen=True)
class TickHealth:
    last_attempt_at: datetime | None  # None: never attempted
    last_status_ok: bool | None  # None: never attempted
    state: str  # ENABLED, PAUSED, DISABLED, UPDATE_FAILED, or NOT_FOUND
    next_attempt_at: datetime | None = None
    last_status_message: str = ""

    def healthy(self, now: datetime, max_silence: timedelta) -> bool:
        """Enabled, attempted within ``max_silence`` and the last attempt succeeded."""
        return (
            self.state == "ENABLED"
            and self.last_attempt_at is not None
            and now - self.last_attempt_at <= max_silence
            and self.last_status_ok is True
        )


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    stamp: datetime = value  # proto-plus hands back DatetimeWithNanoseconds, a datetime
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def build_client() -> scheduler_v1.CloudSchedulerClient:
    from google.cloud import scheduler_v1

    return scheduler_v1.CloudSchedulerClient()


class SchedulerHealth:
    def __init__(self, client: Any, job_name: str, timeout: float = 10.0, retry_deadline: float = 30.0) -> None:
        self.client = client
        self.job_name = job_name
        self.timeout = timeout
        self.retry = gretry.Retry(predicate=gretry.if_exception_type(*_TRANSIENT), timeout=retry_deadline)

    @classmethod
    def from_settings(cls, settings: Settings, client: Any = None) -> SchedulerHealth:
        job = settings.scheduler_tick_job
        name = (
            job
            if job.startswith("projects/")
            else (f"projects/{settings.gcp_project}/locations/{settings.gcp_location}/jobs/{job}")
        )
        return cls(
            client if client is not None else build_client(),
            name,
            timeout=settings.gcp_call_timeout_seconds,
            retry_deadline=settings.gcp_retry_deadline_seconds,
        )

    def tick_health(self) -> TickHealth:
        try:
            job = self.client.get_job(name=self.job_name, retry=self.retry, timeout=self.timeout)
        except gexc.NotFound:
            log.warning("tick job %s not found", self.job_name)
            return TickHealth(None, None, "NOT_FOUND")
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise SchedulerHealthError(f"reading {self.job_name}: {exc}") from exc
        last_attempt = _aware(job.last_attempt_time if "last_attempt_time" in job else None)
        status = job.status
        return TickHealth(
            last_attempt_at=last_attempt,
            last_status_ok=None if last_attempt is None else status.code == 0,
            state=job.state.name,
            next_attempt_at=_aware(job.schedule_time if "schedule_time" in job else None),
            last_status_message=status.message,
        )
