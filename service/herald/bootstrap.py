"""The composition root: the one place that decides which adapters are wired."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herald.adapters.embedded.log_publisher import LogPublisher
from herald.domain.errors import StorageUnavailable
from herald.domain.retry import RetryPolicy
from herald.ports.blobs import BlobStore
from herald.ports.clock import Clock, SystemClock
from herald.ports.events import EventPublisher
from herald.ports.heartbeat import Heartbeat
from herald.ports.messages import Chat, Mailer
from herald.ports.queue import TaskQueue
from herald.ports.sources import Source
from herald.ports.store import Store
from herald.settings import Settings

if TYPE_CHECKING:
    from herald.adapters.gcp.scheduler_health import TickHealth

log = logging.getLogger(__name__)


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
    events: EventPublisher = field(default_factory=LogPublisher)
    # Is the tick itself alive? gcp: the Cloud Scheduler tick job's state (for the watchdog);
    # None on the embedded backend, whose ticker is in-process.
    tick_health: Callable[[], TickHealth] | None = None
    # One transaction around a state change and the tasks it implies. Embedded: the store
    # and the queue share one SQLite database, so both commit or neither does. gcp:
    # Firestore and Cloud Tasks cannot share one; the tick's reconciler re-enqueues work
    # that made no progress within its lease (services/reconcile.py).
    atomic: Callable[[], AbstractContextManager[Any]] = nullcontext

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)


def data_secret(settings: Settings) -> bytes:
    """The HMAC key for links: from settings, else one generated once per data dir."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret.key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def build_container(settings: Settings, clock: Clock | None = None, base_dir: Path | None = None) -> Container:
    """Raises StorageUnavailable (naming the file and the likely cause) when the data
    folder cannot be used: corrupt, read-only, full or missing."""
    clock = clock or SystemClock()
    if settings.backend == "gcp":
        from herald.bootstrap_gcp import build_gcp_container

        return build_gcp_container(settings, clock, base_dir)
    try:
        return build_embedded_container(settings, clock, base_dir)
    except OSError as exc:
        raise StorageUnavailable(f"{exc.filename or settings.data_dir}: {exc.strerror or exc}") from None


def _mailer(settings: Settings, clock: Clock) -> Mailer:
    if settings.sendgrid_api_key:
        from herald.adapters.sendgrid_mailer import SendGridMailer

        if not settings.sendgrid_webhook_public_key:
            log.warning(
                "SendGrid sending is on but HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: no event can confirm "
                "a send whose outcome is unknown (a timeout), so such e-mails are never re-sent automatically; "
                "they stay 'unknown', the owner alert lists them and resend-to-failed offers them"
            )
        return SendGridMailer.from_settings(settings, clock=clock)
    from herald.adapters.embedded.outbox import OutboxMailer

    return OutboxMailer(settings.outbox_dir, settings.mail_from)


def _chat(settings: Settings) -> Chat:
    if settings.slack_bot_token or settings.slack_live:
        from herald.adapters.slack_chat import SlackChat

        return SlackChat.from_settings(settings)
    from herald.adapters.embedded.outbox import OutboxChat

    return OutboxChat(settings.outbox_dir)


def build_embedded_container(settings: Settings, clock: Clock, base_dir: Path | None = None) -> Container:
    from herald.adapters.embedded.local_blobs import LocalBlobStore
    from herald.adapters.embedded.sqlite_db import SQLiteFile
    from herald.adapters.embedded.sqlite_queue import SQLiteQueue
    from herald.adapters.embedded.sqlite_store import SQLiteStore
    from herald.adapters.heartbeat import HttpHeartbeat
    from herald.adapters.sources import SourceRouter

    secret = data_secret(settings)
    db = SQLiteFile(settings.data_dir / "herald.db")  # store and queue: one database, one transaction
    return Container(
        settings=settings,
        clock=clock,
        store=SQLiteStore(db),
        queue=SQLiteQueue(db, clock),
        atomic=db.write,
        blobs=LocalBlobStore(settings.data_dir / "blobs", secret, settings.public_url, clock),
        mailer=_mailer(settings, clock),
        chat=_chat(settings),
        source=SourceRouter(
            base_dir=base_dir or Path.cwd(),
            timeout_seconds=settings.http_timeout_seconds,
            root=settings.source_root,
            allow_private=settings.allow_private_targets,
        ),
        heartbeat=HttpHeartbeat(
            timeout_seconds=settings.heartbeat_timeout_seconds, allow_private=settings.allow_private_targets
        ),
        secret=secret,
        retry=RetryPolicy(delays=settings.retry_delays, max_retries=settings.max_retries),
    )
