"""Request guards every route shares (issue 11): who counts as "local", which Host and
Origin are ours, the body rules of state-changing API calls, and the headers every
response carries.

Openness without credentials is decided per request, never from a setting alone: the
app must have been started by ``herald serve`` bound to a loopback address (the serve
command records the address it bound in ``app.config[OPEN_LOOPBACK]``) *and* the peer
of this request must be a loopback address. gunicorn's ``create_app()`` (the image) never
sets it, so without a token it refuses /api and /admin with 401 (ARCHITECTURE.md
decision 14).

A loopback-bound server is still reachable from any web page the user visits (CSRF) and
through DNS rebinding (a hostile name resolving to 127.0.0.1). So in loopback mode the
``Host`` must be one of ours (HERALD_BASE_URL's host, the loopback names,
HERALD_ALLOWED_HOSTS), and state-changing /api calls must be ``application/json`` (a
cross-site "simple" request cannot send that without a CORS preflight, which Herald never
answers) and must not come from another site (``Origin`` / ``Sec-Fetch-Site``).
https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from werkzeug.serving import WSGIRequestHandler

from herald.settings import Settings
from herald.web.errors import error

log = logging.getLogger(__name__)

OPEN_LOOPBACK = "HERALD_OPEN_LOOPBACK"  # app.config key: the address `herald serve` bound
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Pages that carry a capability or a session: never cached by the browser or a proxy.
NO_STORE_PREFIXES = ("/admin", "/l/", "/unsubscribe", "/api", "/blobs")
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def is_loopback_address(address: str | None) -> bool:
    if not address:
        return False
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def loopback_mode() -> bool:
    """True when this app is `herald serve` bound to a loopback address."""
    bound = current_app.config.get(OPEN_LOOPBACK)
    return isinstance(bound, str) and is_loopback_address(bound)


def open_without_credentials() -> bool:
    """May this request be served without credentials? Loopback-bound serve, loopback peer."""
    return loopback_mode() and is_loopback_address(request.remote_addr)


def _hostname(host: str) -> str:
    """``example.com:8080`` -> ``example.com``; ``[::1]:80`` -> ``::1``; lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_hosts(settings: Settings) -> set[str]:
    hosts = set(LOOPBACK_NAMES)
    public = urlsplit(settings.public_url).hostname
    if public:
        hosts.add(public.lower())
    hosts.update(_hostname(h) for h in settings.allowed_hosts)
    return hosts


def host_allowed(settings: Settings, host: str) -> bool:
    return bool(host) and _hostname(host) in allowed_hosts(settings)


def cross_site() -> str | None:
    """Why this request looks cross-site, or None. ``Sec-Fetch-Site`` decides when the
    browser sends it (every current one does): with ``Referrer-Policy: no-referrer`` a
    same-origin form POST carries ``Origin: null``, so Origin is the fallback only. A
    request with neither (curl, scripts) is not refused here."""
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site:
        return None if fetch_site in {"same-origin", "none"} else f"Sec-Fetch-Site: {fetch_site[:40]}"
    origin = request.headers.get("Origin")
    if origin is not None:
        parsed = urlsplit(origin) if origin != "null" else None
        if parsed is None or not parsed.netloc or parsed.netloc.lower() != request.host.lower():
            return f"Origin {origin[:100]!r} is not this server"
    return None


MAX_JSON_DEPTH = 64  # the deepest a legitimate body goes is a SendGrid event's few levels
API_MAX_BODY = 1024 * 1024
_FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Nesting deeper than ``limit`` (strings skipped)? json.loads would raise RecursionError
    somewhere past ~1,000 levels; refusing far earlier keeps every parser safe."""
    depth = 0
    for match in _BRACKETS.finditer(_JSON_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _body_refusal() -> Any:
    if request.path.startswith("/api/") and (request.content_length or 0) > API_MAX_BODY:
        return error(413, "API request bodies are limited to 1 MiB")
    if request.method not in STATE_CHANGING or request.mimetype in _FORMS:
        return None  # form bodies are parsed by Werkzeug's own bounded parser
    if json_too_deep(request.get_data(cache=True)):
        return error(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return None


def _is_json() -> bool:
    return (request.mimetype or "") == "application/json"


def _guard() -> Any:
    from herald.web.auth import container

    settings = container().settings
    if loopback_mode() and not host_allowed(settings, request.host):
        # DNS rebinding: a hostile name resolved to 127.0.0.1; the browser sends its Host.
        log.warning("request refused: Host not allowed", extra={"host": request.host[:200], "path": request.path})
        return error(400, "this Host is not served here; set HERALD_BASE_URL or HERALD_ALLOWED_HOSTS")
    if request.method in STATE_CHANGING and request.path.startswith(("/api/", "/admin")):
        why = cross_site()
        if why is not None:
            log.warning("cross-site request refused", extra={"path": request.path, "reason": why})
            return error(403, f"cross-site request refused ({why})")
        if request.path.startswith("/api/") and request.method != "DELETE" and not _is_json():
            # DELETE is never a "simple" request, so browsers preflight it cross-site.
            return error(415, "state-changing API calls must send Content-Type: application/json")
    return _body_refusal()


def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith(NO_STORE_PREFIXES):
        response.headers["Cache-Control"] = "no-store"
    return response


class QuietRequestHandler(WSGIRequestHandler):
    """`herald serve`'s handler: ``Server: Herald``, not the Werkzeug and Python versions.
    (gunicorn already sends a bare ``Server: gunicorn``.)"""

    def version_string(self) -> str:
        return "Herald"


def register(app: Flask) -> None:
    app.before_request(_guard)
    app.after_request(_headers)
