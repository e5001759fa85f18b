"""Builders for definitions and containers used across the suite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from herald.adapters.embedded.local_blobs import LocalBlobStore
from herald.adapters.embedded.log_publisher import LogPublisher
from herald.adapters.embedded.sqlite_store import SQLiteStore
from herald.domain.records import Delivery
from herald.domain.reports import ReportDefinition
from herald.domain.retry import RetryPolicy
from herald.domain.states import DeliveryStatus
from herald.ports.clock import FakeClock
from herald.ports.container import Container
from herald.settings import Settings
from tests.fakes import RecordingHeartbeat, RecordingQueue, ScriptedChat, ScriptedMailer, StaticSource

T0 = datetime(2026, 11, 2, 6, 59, tzinfo=UTC)


def report(**overrides: Any) -> ReportDefinition:
    data: dict[str, Any] = {
        "id": "board-pack",
        "name": "Board pack",
        "owner": "cfo@example.com",
        "schedule": {"cron": "0 7 * * *", "timezone": "Europe/London"},
        "source": {"type": "pdf", "data": {"columns": ["a"], "rows": [[1]]}},
        "recipients": {"email": ["a@example.com", "b@example.com"]},
    }
    data.update(overrides)
    return ReportDefinition.model_validate(data)


def delivery(status: DeliveryStatus = DeliveryStatus.SENT, **fields: Any) -> Delivery:
    """One e-mail delivery ``d1`` of run ``r1`` to a@example.com, created at T0."""
    data: dict[str, Any] = {
        "id": "d1",
        "run_id": "r1",
        "report_id": "board-pack",
        "channel": "email",
        "recipient": "a@example.com",
        "status": status,
        "created_at": T0,
        "updated_at": T0,
    }
    return Delivery(**{**data, **fields})


def recipients(n: int, domain: str = "example.com") -> list[str]:
    return [f"user{i:05d}@{domain}" for i in range(n)]


def container(tmp_path: Path, clock: FakeClock | None = None, **settings: Any) -> Container:
    clock = clock or FakeClock(T0)
    config = Settings(data_dir=tmp_path, secret_key="test-secret", **settings)
    mailer = ScriptedMailer()
    mailer.clock = clock
    return Container(
        settings=config,
        clock=clock,
        store=SQLiteStore(tmp_path / "herald.db"),
        queue=RecordingQueue(),
        blobs=LocalBlobStore(tmp_path / "blobs", b"test-secret", config.public_url, clock),
        mailer=mailer,
        chat=ScriptedChat(),
        source=StaticSource(),
        heartbeat=RecordingHeartbeat(),
        secret=b"test-secret",
        retry=RetryPolicy(delays=config.retry_delays, max_retries=config.max_retries),
        events=LogPublisher(),
    )
