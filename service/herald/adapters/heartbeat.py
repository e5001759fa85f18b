"""Heartbeats to Healthchecks.io or Cronitor. A monitor being down never affects a run:
each ping is a notification (services/notifications.py) retried on its own short schedule.

Style, from the report's ``heartbeat_url``:

- A fragment marker forces it: ``…#cronitor`` or ``…#healthchecks`` (fragments are never
  sent, so the marker is invisible to the monitor; useful for self-hosted or proxied ones).
- Otherwise a host ending in ``cronitor.link`` or ``cronitor.io`` is Cronitor,
  anything else is Healthchecks.io (hosted or self-hosted).

Healthchecks.io (https://healthchecks.io/docs/http_api/): ``<url>/start``, ``<url>``
(success), ``<url>/fail``, each with ``?rid=<uuid>``; rid must be a UUID, so it is a
UUIDv5 of the run id — the same run always pings with the same rid.
Cronitor (https://cronitor.io/docs/telemetry-api): ``<url>?state=run|complete|fail``
with ``series=<run id>`` to pair the start with the end.
No service pings without a URL, so there is no null adapter: tests use a fake.
"""

from __future__ import annotations

import logging
import uuid
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from herald import __version__
from herald.adapters import net_guard
from herald.domain.errors import DeliveryError
from herald.ports.heartbeat import HeartbeatState

log = logging.getLogger(__name__)

Style = Literal["healthchecks", "cronitor"]
USER_AGENT = f"Herald/{__version__} (+heartbeat)"
MAX_MESSAGE = 1000  # characters of the outcome line; Healthchecks keeps up to 10,000 bytes by default
_RID_NAMESPACE = uuid.UUID("6f1c1b0e-6b5e-4c43-9d55-3c1f0e2a7b41")  # Herald's own; never change it
_HC_SUFFIX: dict[HeartbeatState, str] = {"start": "/start", "success": "", "fail": "/fail"}
_CRONITOR_STATE: dict[HeartbeatState, str] = {"start": "run", "success": "complete", "fail": "fail"}


def run_rid(run_id: str) -> str:
    """Healthchecks.io run id: a UUID derived from ours, stable across retries."""
    return str(uuid.uuid5(_RID_NAMESPACE, run_id))


def url_style(url: str) -> Style:
    parts = urlsplit(url)
    if parts.fragment in ("cronitor", "healthchecks"):
        return parts.fragment  # type: ignore[return-value]
    host = (parts.hostname or "").lower()
    if any(host == d or host.endswith("." + d) for d in ("cronitor.link", "cronitor.io")):
        return "cronitor"
    return "healthchecks"


def ping_url(url: str, state: HeartbeatState, run_id: str) -> str:
    """The URL to request for ``state`` of run ``run_id`` (without the style marker)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    path = parts.path
    if url_style(url) == "cronitor":
        query = [(k, v) for k, v in query if k not in ("state", "series")]
        query += [("state", _CRONITOR_STATE[state]), ("series", run_id)]
    else:
        path = path.rstrip("/") + _HC_SUFFIX[state]
        query = [(k, v) for k, v in query if k != "rid"] + [("rid", run_rid(run_id))]
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))


def _where(url: str) -> str:
    # The ping URL is a credential (Healthchecks UUID, Cronitor API key): log the host only.
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(malformed URL)"
    return f"{parts.scheme}://{parts.hostname or ''}"


class HttpHeartbeat:
    """The Heartbeat port over HTTP: Healthchecks gets a POST whose body is the run's outcome
    line (its ping log shows why), Cronitor a GET with ``message``. Failures raise
    DeliveryError: timeouts, refused connections, 429 and 5xx are transient (the
    notification retries within the monitor's grace), other 4xx permanent."""

    def __init__(
        self, timeout_seconds: float, session: requests.Session | None = None, *, allow_private: bool = False
    ) -> None:
        self._timeout = timeout_seconds
        self._allow_private = allow_private
        # Monitor URLs come from definitions: the guarded session refuses metadata, link-local
        # and (unless allowed) private addresses at connect time too, so DNS cannot rebind past it.
        self._session = session or net_guard.guarded_session(allow_private)
        self._session.headers["User-Agent"] = USER_AGENT

    def ping(self, url: str, state: HeartbeatState, run_id: str, message: str = "") -> None:
        context = {"run_id": run_id, "heartbeat_state": state, "monitor": _where(url)}
        try:
            target = ping_url(url, state, run_id)
        except ValueError as exc:
            raise DeliveryError(f"heartbeat URL is malformed: {exc}", permanent=True) from None
        text = message[:MAX_MESSAGE]
        try:
            if url_style(url) == "cronitor":
                if text:
                    target += ("&" if "?" in target else "?") + urlencode({"message": text})
                method, body = "GET", None
            else:
                method, body = "POST", text.encode()
            with net_guard.request(
                self._session, method, target, allow_private=self._allow_private, data=body, timeout=self._timeout
            ) as response:
                status = response.status_code
        except net_guard.TargetRefused as exc:
            log.warning("heartbeat refused", extra={**context, "error": str(exc)})
            raise DeliveryError(f"monitor address not allowed: {exc}", permanent=True) from None
        except requests.Timeout:
            log.warning("heartbeat timed out", extra={**context, "timeout_seconds": self._timeout})
            raise DeliveryError(f"monitor did not answer within {self._timeout:g} s", permanent=False) from None
        except requests.RequestException as exc:
            log.warning("heartbeat failed", extra={**context, "error": type(exc).__name__})
            raise DeliveryError(f"monitor unreachable ({type(exc).__name__})", permanent=False) from None
        if 200 <= status < 300:
            log.info("heartbeat sent", extra=context)
            return
        # Healthchecks answers 404 for an unknown check and 409 for an ambiguous slug;
        # Cronitor 4xx for a bad key: retrying cannot help. 429 and 5xx can.
        log.warning("heartbeat rejected", extra={**context, "status": status})
        raise DeliveryError(f"monitor answered HTTP {status}", permanent=status < 500 and status != 429)
