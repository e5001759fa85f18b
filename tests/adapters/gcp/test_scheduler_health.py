"""SchedulerHealth reads the tick job through a fake Cloud Scheduler client that
returns real scheduler_v1.Job messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.rpc import code_pb2, status_pb2

from herald.adapters.gcp.scheduler_health import SchedulerHealth, SchedulerHealthError, TickHealth
from herald.settings import load_settings

JOB = "projects/herald-test/locations/europe-west1/jobs/herald-tick"
NOW = datetime(2024, 3, 1, 12, 0, 30, tzinfo=UTC)


class FakeSchedulerClient:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def get_job(self, name: str, retry: Any = None, timeout: float | None = None) -> scheduler_v1.Job:
        self.calls.append({"name": name, "timeout": timeout})

        def rpc() -> scheduler_v1.Job:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return retry(rpc)() if retry is not None else rpc()


def job(**fields: Any) -> scheduler_v1.Job:
    return scheduler_v1.Job(name=JOB, schedule="* * * * *", **fields)


def test_enabled_job_whose_last_attempt_succeeded() -> None:
    client = FakeSchedulerClient(
        job(
            state=scheduler_v1.Job.State.ENABLED,
            last_attempt_time=datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
            schedule_time=datetime(2024, 3, 1, 12, 1, tzinfo=UTC),
            status=status_pb2.Status(code=code_pb2.OK),
        )
    )
    health = SchedulerHealth(client, JOB, timeout=3).tick_health()
    assert health == TickHealth(
        last_attempt_at=datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
        last_status_ok=True,
        state="ENABLED",
        next_attempt_at=datetime(2024, 3, 1, 12, 1, tzinfo=UTC),
    )
    assert health.healthy(NOW, timedelta(minutes=5))
    assert not health.healthy(NOW + timedelta(minutes=10), timedelta(minutes=5))
    assert client.calls == [{"name": JOB, "timeout": 3}]


def test_failed_last_attempt() -> None:
    client = FakeSchedulerClient(
        job(
            state=scheduler_v1.Job.State.ENABLED,
            last_attempt_time=datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
            status=status_pb2.Status(code=code_pb2.UNAVAILABLE, message="HTTP 503"),
        )
    )
    health = SchedulerHealth(client, JOB).tick_health()
    assert health.last_status_ok is False
    assert health.last_status_message == "HTTP 503"
    assert not health.healthy(NOW, timedelta(minutes=5))


def test_never_attempted_and_paused() -> None:
    health = SchedulerHealth(FakeSchedulerClient(job(state=scheduler_v1.Job.State.PAUSED)), JOB).tick_health()
    assert health == TickHealth(last_attempt_at=None, last_status_ok=None, state="PAUSED")
    assert not health.healthy(NOW, timedelta(minutes=5))


def test_missing_job_is_reported_not_raised() -> None:
    health = SchedulerHealth(FakeSchedulerClient(gexc.NotFound("no job")), JOB).tick_health()
    assert health.state == "NOT_FOUND"
    assert not health.healthy(NOW, timedelta(minutes=5))


def test_transient_errors_are_retried() -> None:
    client = FakeSchedulerClient(gexc.ServiceUnavailable("blip"), job(state=scheduler_v1.Job.State.ENABLED))
    assert SchedulerHealth(client, JOB).tick_health().state == "ENABLED"


def test_other_errors_raise() -> None:
    with pytest.raises(SchedulerHealthError):
        SchedulerHealth(FakeSchedulerClient(gexc.PermissionDenied("no")), JOB).tick_health()


def test_job_name_from_settings() -> None:
    settings = load_settings(gcp_project="herald-test", gcp_location="europe-west1")
    assert SchedulerHealth.from_settings(settings, client=FakeSchedulerClient()).job_name == JOB
