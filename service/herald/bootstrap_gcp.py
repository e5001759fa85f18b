"""The gcp backend's half of the composition root (HERALD_BACKEND=gcp).

Firestore store, Cloud Tasks queue, GCS blobs, Pub/Sub events, the Cloud Scheduler tick
job's health, and the OIDC verifiers of the internal routes. Nothing here starts a
thread: Cloud Run may freeze the CPU between requests, so all work arrives as a request
(Cloud Tasks, Cloud Scheduler, Pub/Sub push). Clients are built here, once per process,
never at import time. Every emulator host is a setting so tests and laptops can point
each client at a local emulator.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from herald.domain.retry import RetryPolicy
from herald.ports.clock import Clock
from herald.ports.container import Container
from herald.ports.heartbeat import Heartbeat
from herald.ports.messages import Chat, Mailer
from herald.ports.sources import Source
from herald.settings import Settings

if TYPE_CHECKING:
    from google.cloud import firestore

    from herald.adapters.gcp.iap import IapVerifier
    from herald.adapters.gcp.oidc import OidcVerifier
    from herald.adapters.gcp.scheduler_health import SchedulerHealth, TickHealth

# The route families behind OIDC, by first path segment (web/auth.py picks by it).
INTERNAL_FAMILIES = ("tasks", "pubsub", "scheduler")

_ENV_LOCK = threading.Lock()  # the Firestore client reads FIRESTORE_EMULATOR_HOST once, in its constructor


class GcpConfigError(ValueError):
    """The gcp backend is missing a setting it cannot run without (raised at start-up)."""


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    with _ENV_LOCK:
        before = os.environ.get(name)
        os.environ[name] = value
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def build_firestore_client(settings: Settings) -> firestore.Client:
    """A Firestore client; HERALD_FIRESTORE_EMULATOR_HOST (or the library's own
    FIRESTORE_EMULATOR_HOST) points it at the emulator, with anonymous credentials."""
    from google.cloud import firestore

    host = settings.firestore_emulator_host or os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    if not host:
        return firestore.Client(project=settings.gcp_project or None)
    from google.auth.credentials import AnonymousCredentials

    with _env("FIRESTORE_EMULATOR_HOST", host):
        return firestore.Client(
            project=settings.gcp_project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )


class LazyTickHealth:
    """The tick job's health, with the Cloud Scheduler client built on first use: only
    the watchdog asks, and no request path should pay for (or fail on) that client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._health: SchedulerHealth | None = None

    def __call__(self) -> TickHealth:
        from herald.adapters.gcp.scheduler_health import SchedulerHealth

        with self._lock:
            if self._health is None:
                self._health = SchedulerHealth.from_settings(self._settings)
        return self._health.tick_health()


def _require(settings: Settings, *names: str) -> None:
    missing = [f"HERALD_{name.upper()}" for name in names if not getattr(settings, name)]
    if missing:
        raise GcpConfigError(f"HERALD_BACKEND=gcp needs {', '.join(missing)}")


def build_gcp_container(
    settings: Settings, clock: Clock, *, mailer: Mailer, chat: Chat, source: Source, heartbeat: Heartbeat
) -> Container:
    """The gcp ports; the adapters both backends share (mail, chat, sources, heartbeats) come
    from herald.bootstrap, which calls this."""
    from herald.adapters.gcp.cloud_tasks_queue import CloudTasksQueue
    from herald.adapters.gcp.firestore_store import FirestoreStore
    from herald.adapters.gcp.gcs_blobs import GcsBlobStore
    from herald.adapters.gcp.pubsub import PubSubPublisher

    # One HMAC key for links and unsubscribe tokens across every instance: a key
    # generated per container would break links served by another instance.
    _require(settings, "gcp_project", "secret_key", "tasks_worker_url", "gcs_bucket")
    return Container(
        settings=settings,
        clock=clock,
        store=FirestoreStore(build_firestore_client(settings)),
        queue=CloudTasksQueue.from_settings(settings),
        blobs=GcsBlobStore.from_settings(settings),
        mailer=mailer,
        chat=chat,
        source=source,
        heartbeat=heartbeat,
        secret=settings.secret_key.encode(),
        retry=RetryPolicy(delays=settings.retry_delays, max_retries=settings.max_retries),
        events=PubSubPublisher.from_settings(settings),
        tick_health=LazyTickHealth(settings),
    )


def internal_verifiers(settings: Settings) -> Mapping[str, OidcVerifier]:
    """One OIDC verifier per internal route family, sharing one certificate cache.

    Each family accepts its own invokers (oidc_<family>_emails) or, when those are not
    set, every account in oidc_allowed_emails. The audience is the worker's URL."""
    from herald.adapters.gcp.oidc import CachedCertsRequest, OidcVerifier

    if not settings.oidc_audience:
        raise GcpConfigError("HERALD_BACKEND=gcp serving internal routes needs HERALD_OIDC_AUDIENCE")
    certs = CachedCertsRequest(timeout=settings.http_timeout_seconds)
    verifiers = {}
    for family in INTERNAL_FAMILIES:
        emails = getattr(settings, f"oidc_{family}_emails") or settings.oidc_allowed_emails
        if not emails:
            raise GcpConfigError(
                f"no invoker accepted on /{family}: "
                f"set HERALD_OIDC_{family.upper()}_EMAILS or HERALD_OIDC_ALLOWED_EMAILS"
            )
        verifiers[family] = OidcVerifier(
            settings.oidc_audience,
            emails,
            certs_url=settings.oidc_certs_url,
            clock_skew=settings.oidc_clock_skew_seconds,
            request=certs,
        )
    return verifiers


def iap_verifier(settings: Settings) -> IapVerifier:
    """The admin service's check of IAP's signed header (web/admin_auth.py uses it)."""
    from herald.adapters.gcp.iap import IapVerifier

    return IapVerifier(settings.iap_audience, settings.iap_certs_url, settings.http_timeout_seconds)
