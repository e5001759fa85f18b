"""Outbound HTTP that a definition controls goes only where it may (issue 11, point 8).

http sources, heartbeat pings and Slack incoming webhooks take URLs from definitions, so
a definition could aim Herald at the metadata server or the private network (SSRF).
Three checks, because a name can resolve to anything and change between checks:

1. ``check_url`` before the request: scheme, literal addresses and the metadata names
   (herald.domain.targets; definition validation runs the same rules);
2. at connect time, on the address the socket actually connected to (so DNS rebinding
   gains nothing): ``guarded_session`` mounts an adapter whose connections check
   ``getpeername()`` before a byte is sent;
3. redirects are never followed blindly: ``request`` follows at most ``MAX_REDIRECTS``
   itself, each target checked like the first (and the Authorization header dropped
   when the host changes).

``allow_private`` (settings.allow_private_targets) admits private and loopback
addresses, never link-local or metadata. Proxies from the environment are ignored
(``trust_env = False``): through a proxy the connected address says nothing.
https://cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

import logging
import re
import socket
from functools import cache
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from herald.domain.targets import address_problem, url_problem

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class TargetRefused(ValueError):
    """The URL or the address it reached is not one Herald may contact (permanent: a retry
    cannot help). Not an OSError on purpose, so urllib3 neither retries nor rewraps it."""

    permanent = True


def check_url(url: str, allow_private: bool) -> None:
    """Raise TargetRefused when ``url`` may not be requested (judged without DNS)."""
    problem = url_problem(url, allow_private)
    if problem:
        raise TargetRefused(f"{_where(url)}: {problem}")


def check_resolved(url: str, allow_private: bool, timeout: float = 5.0) -> None:
    """``check_url`` plus every address the host resolves to now. For clients that do not
    go through ``guarded_session`` (slack_sdk's WebhookClient uses urllib): weaker than the
    connect-time check, since a name may resolve differently a moment later."""
    check_url(url, allow_private)
    parts = urlsplit(url)
    host = parts.hostname or ""
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise TargetRefused(f"{_where(url)}: cannot resolve ({exc.strerror or exc})") from None
    finally:
        socket.setdefaulttimeout(previous)
    for info in infos:
        problem = address_problem(str(info[4][0]), allow_private)
        if problem:
            raise TargetRefused(f"{_where(url)} resolves to {problem}")


def _where(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}"
    except ValueError:
        return "(malformed URL)"


class _Guarded:
    allow_private = False

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        peer = str(sock.getpeername()[0])
        problem = address_problem(peer, self.allow_private)
        if problem:
            sock.close()
            raise TargetRefused(f"{getattr(self, 'host', '?')} resolved to {problem}")
        return sock


@cache
def _pools(allow_private: bool) -> dict[str, type[HTTPConnectionPool]]:
    flags = {"allow_private": allow_private}
    http_conn = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), flags)
    https_conn = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), flags)
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections refuse a disallowed peer address."""

    def __init__(self, allow_private: bool, **kwargs: Any) -> None:
        self.allow_private = allow_private
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pools(self.allow_private)


def guarded_session(allow_private: bool) -> requests.Session:
    """A Session for definition-controlled URLs: connect-time address check, no env proxies."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedAdapter(allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def request(
    session: requests.Session, method: str, url: str, *, allow_private: bool, **kwargs: Any
) -> requests.Response:
    """``session.request`` with the URL checked and redirects followed here, each checked.
    The caller closes the response (``with``). Raises TargetRefused or requests' errors."""
    kwargs["allow_redirects"] = False
    headers = dict(kwargs.pop("headers", None) or {})
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allow_private)
        response = session.request(method, url, headers=headers, **kwargs)
        location = response.headers.get("Location")
        if response.status_code not in REDIRECTS or not location:
            return response
        response.close()
        target = urljoin(url, location)
        if urlsplit(target).hostname != urlsplit(url).hostname:
            headers = {k: v for k, v in headers.items() if k.lower() not in {"authorization", "cookie"}}
        if response.status_code in {301, 302, 303} and method != "HEAD":
            method = "GET"
            kwargs.pop("json", None)
            kwargs.pop("data", None)
        url = target
    raise TargetRefused(f"{_where(url)}: more than {MAX_REDIRECTS} redirects")


# DEBUG logs of urllib3 name every URL with its query string (API keys live there).
_QUERY = re.compile(r"\?[^\s\"']*")


class RedactUrls(logging.Filter):
    """Replace query strings and userinfo in urllib3's log arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


def _redact(text: str) -> str:
    text = re.sub(r"//[^/@\s]+@", "//REDACTED@", text)
    return _QUERY.sub("?REDACTED", text)


def install_log_redaction() -> None:
    """Idempotent: add RedactUrls to the urllib3 loggers that print URLs."""
    for name in ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrls) for f in logger.filters):
            logger.addFilter(RedactUrls())
