"""HTTP source: ask a reporting API for the rendered file.

The request carries ``period``, ``run_id`` and the run's params (query string for GET,
JSON body for POST). Any failure — connection, timeout, non-2xx, a content type not
listed in ``content_types``, an empty body — is a RenderError: the run fails loudly
rather than delivering something nobody asked for (ARCHITECTURE.md decision 5).
Optional response headers: ``X-Report-Summary`` (the summary line, UTF-8) and
``X-Report-Rows`` (an integer for ``{rows}``).

Confined (issue 11): the URL, the address actually connected to and every redirect are
checked by herald.adapters.net_guard (no link-local or metadata ever; private and
loopback only with ``allow_private``). ``${env:NAME}`` in the URL or a header value is
replaced from the environment here, at request time, and never stored or logged.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import time
from email.message import Message
from urllib.parse import urlsplit

import requests

from herald.adapters import net_guard
from herald.domain.errors import RenderError
from herald.domain.reports import SECRET_REF, HttpSource
from herald.domain.strict import without_control
from herald.ports.sources import Rendered, RenderRequest

_EXTENSIONS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/json": "json",
    "text/html": "html",
    "application/zip": "zip",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
_CHUNK = 64 * 1024


class HttpRenderer:
    """Render an ``http`` source.

    ``connect_timeout_seconds`` bounds connecting (capped by the definition's timeout);
    the definition's ``timeout_seconds`` bounds each read and the whole download, itself
    capped by ``max_seconds`` (settings.http_source_max_seconds): one upstream can hold a
    render worker only so long, and always less than a render's claim.
    """

    def __init__(
        self,
        connect_timeout_seconds: float = 10.0,
        session: requests.Session | None = None,
        max_bytes: int = 200 * 1024 * 1024,
        allow_private: bool = False,
        max_seconds: float = 300.0,
    ) -> None:
        self._connect_timeout = connect_timeout_seconds
        self._max_seconds = max_seconds
        self._session = session
        self._max_bytes = max_bytes
        self._allow_private = allow_private
        net_guard.install_log_redaction()

    def render(self, request: RenderRequest) -> Rendered:
        source = request.definition.source
        if not isinstance(source, HttpSource):
            raise RenderError(f"HttpRenderer cannot render a {source.type!r} source")
        if self._session is not None:
            return self._fetch(self._session, request, source)
        with net_guard.guarded_session(self._allow_private) as session:
            return self._fetch(session, request, source)

    def _fetch(self, session: requests.Session, request: RenderRequest, source: HttpSource) -> Rendered:
        where = _redacted(source.url)
        url = resolve_secrets(source.url, where)
        payload = {**request.params, "period": request.period, "run_id": request.run_id}
        given = {name: resolve_secrets(value, where) for name, value in source.headers.items()}
        headers = {"Accept": ", ".join(source.content_types), **given}
        limit = min(source.timeout_seconds, self._max_seconds)
        timeout = (min(self._connect_timeout, limit), limit)
        deadline = time.monotonic() + limit
        try:
            with net_guard.request(
                session,
                source.method,
                url,
                allow_private=self._allow_private,
                headers=headers,
                timeout=timeout,
                stream=True,
                params=payload if source.method == "GET" else None,
                json=payload if source.method == "POST" else None,
            ) as response:
                _check_status(response, where)
                media_type = _media_type(response.headers.get("Content-Type", ""))
                if not _accepted(media_type, source.content_types):
                    raise RenderError(
                        f"reporting API {where} returned content type {media_type or '(none)'!r}; "
                        f"expected one of {', '.join(source.content_types)}"
                    )
                data = self._read(response, deadline, where, source.timeout_seconds)
                summary = _header_text(response.headers.get("X-Report-Summary"))
                rows = _rows(response.headers.get("X-Report-Rows"))
                disposition = response.headers.get("Content-Disposition", "")
        except net_guard.TargetRefused as exc:
            raise RenderError(f"reporting API {where} not allowed: {exc}") from None
        except requests.Timeout:
            raise RenderError(f"reporting API {where} timed out after {limit:g}s") from None
        except requests.RequestException as exc:
            # Not str(exc): requests puts the full URL, query string and all, in it.
            if "timed out" in str(exc):  # a read timeout mid-body surfaces as ConnectionError
                raise RenderError(f"reporting API {where} timed out after {limit:g}s") from None
            raise RenderError(f"reporting API {where} unreachable: {type(exc).__name__}") from None
        if not data:
            raise RenderError(f"reporting API {where} returned an empty body")
        filename = _filename(disposition) or _fallback_name(request, media_type)
        return Rendered(data=data, content_type=media_type, filename=filename, summary=summary, rows=rows)

    def _read(self, response: requests.Response, deadline: float, where: str, timeout: float) -> bytes:
        # requests' read timeout applies to each socket read; a server that trickles
        # bytes could hold a worker forever, so the whole download has a deadline too.
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise RenderError(f"reporting API {where} sent more than {self._max_bytes:,} bytes")
            if time.monotonic() > deadline:
                raise RenderError(f"reporting API {where} did not finish sending within {timeout:g}s")
            chunks.append(chunk)
        return b"".join(chunks)


def _check_status(response: requests.Response, where: str) -> None:
    if 200 <= response.status_code < 300:
        return
    snippet = ""
    with contextlib.suppress(requests.RequestException):
        snippet = next(response.iter_content(300), b"").decode("utf-8", "replace").strip()
    detail = f": {' '.join(snippet.split())[:200]}" if snippet else ""
    raise RenderError(f"reporting API {where} answered HTTP {response.status_code}{detail}")


def resolve_secrets(text: str, where: str) -> str:
    """``${env:NAME}`` -> the variable's value; a missing variable fails the render (named, never shown)."""

    def value(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise RenderError(f"reporting API {where}: environment variable {match.group(1)} is not set")
        return found

    return SECRET_REF.sub(value, text)


def _redacted(url: str) -> str:
    """Scheme, host and path only: query strings often carry API keys."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _accepted(media_type: str, allowed: list[str]) -> bool:
    for pattern in (a.strip().lower() for a in allowed):
        if pattern == media_type or (pattern.endswith("/*") and media_type.startswith(pattern[:-1])):
            return True
    return False


def _header_text(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    # http.client decodes headers as Latin-1; recover UTF-8 sent by the API.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        value = value.encode("latin-1").decode("utf-8")
    return without_control(" ".join(value.split()))[:500]


def _rows(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def _filename(disposition: str) -> str | None:
    if not disposition:
        return None
    message = Message()
    message["Content-Disposition"] = disposition
    name = message.get_filename()  # handles RFC 2231 / 6266 filename*=UTF-8''…
    if not name:
        return None
    name = re.split(r"[\\/]", name)[-1]
    name = re.sub(r"[^\w.\-]+", "_", name).strip("._")[:150]
    return name or None


def _fallback_name(request: RenderRequest, media_type: str) -> str:
    ext = _EXTENSIONS.get(media_type) or (mimetypes.guess_extension(media_type) or ".bin").lstrip(".")
    return f"{request.definition.id}-{request.period}.{ext}"
