"""Heartbeats to Healthchecks.io or Cronitor. A monitor being down never affects a run.

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

from herald.ports.heartbeat import HeartbeatState

log = logging.getLogger(__name__)

Style = Literal["healthchecks", "cronitor"]
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
    """The Heartbeat port over HTTP GET. Returns False on any failure; never raises."""

    def __init__(self, timeout_seconds: float, session: requests.Session | None = None) -> None:
        self._timeout = timeout_seconds
        self._session = session

    def ping(self, url: str, state: HeartbeatState, run_id: str) -> bool:
        context = {"run_id": run_id, "heartbeat_state": state, "monitor": _where(url)}
        try:
            target = ping_url(url, state, run_id)
            if self._session is not None:
                response = self._session.get(target, timeout=self._timeout)
            else:
                response = requests.get(target, timeout=self._timeout)
        except requests.Timeout:
            log.warning("heartbeat timed out", extra={**context, "timeout_seconds": self._timeout})
            return False
        except Exception as exc:  # the port promises never to raise: a bad URL is a failed ping too
            log.warning("heartbeat failed", extra={**context, "error": type(exc).__name__})
            return False
        if not 200 <= response.status_code < 300:
            # Healthchecks answers 404 for an unknown check and 409 for an ambiguous slug;
            # Cronitor 4xx for a bad key. None of these should fail the run.
            log.warning("heartbeat rejected", extra={**context, "status": response.status_code})
            return False
        log.info("heartbeat sent", extra=context)
        return True
