"""The composition root: the one place that decides which adapters are wired.

It builds the ports bundle (herald.ports.container.Container) for the embedded backend
here and for gcp in bootstrap_gcp, which takes the channel adapters it shares from here
as arguments (so the two modules do not import each other)."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from herald.adapters.embedded.log_publisher import LogPublisher
from herald.domain.errors import StorageUnavailable
from herald.domain.retry import RetryPolicy
from herald.ports.clock import Clock, SystemClock
from herald.ports.container import Container
from herald.ports.heartbeat import Heartbeat
from herald.ports.messages import Chat, Mailer
from herald.ports.sources import Source
from herald.settings import Settings

log = logging.getLogger(__name__)


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

        return build_gcp_container(
            settings,
            clock,
            mailer=_mailer(settings, clock),
            chat=_chat(settings),
            source=_source(settings, base_dir),
            heartbeat=_heartbeat(settings),
        )
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


def _source(settings: Settings, base_dir: Path | None) -> Source:
    from herald.adapters.sources import SourceRouter

    return SourceRouter(
        base_dir=base_dir or Path.cwd(),
        timeout_seconds=settings.http_timeout_seconds,
        root=settings.source_root,
        allow_private=settings.allow_private_targets,
        max_seconds=settings.http_source_max_seconds,
    )


def _heartbeat(settings: Settings) -> Heartbeat:
    from herald.adapters.heartbeat import HttpHeartbeat

    return HttpHeartbeat(
        timeout_seconds=settings.heartbeat_timeout_seconds, allow_private=settings.allow_private_targets
    )


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

    secret = data_secret(settings)
    db = SQLiteFile(settings.data_dir / "herald.db")  # store and queue: one database, one transaction
    return Container(
        settings=settings,
        clock=clock,
        events=LogPublisher(),
        store=SQLiteStore(db),
        queue=SQLiteQueue(db, clock),
        atomic=db.write,
        blobs=LocalBlobStore(settings.data_dir / "blobs", secret, settings.public_url, clock),
        mailer=_mailer(settings, clock),
        chat=_chat(settings),
        source=_source(settings, base_dir),
        heartbeat=_heartbeat(settings),
        secret=secret,
        retry=RetryPolicy(delays=settings.retry_delays, max_retries=settings.max_retries),
    )
