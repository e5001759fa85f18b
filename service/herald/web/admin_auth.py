"""Who may use /admin, and proof that an action was meant.

- gcp backend: the admin service sits behind IAP, which signs every request it lets
  through with an ES256 JWT in ``x-goog-iap-jwt-assertion``. Cloud Run's ingress is
  trusted only after that JWT verifies for our audience (IAP's own advice: headers
  alone can be forged if anything bypasses IAP).
  https://cloud.google.com/iap/docs/signed-headers-howto
- embedded backend: a login page with the admin token (``HERALD_ADMIN_TOKEN``, else
  ``HERALD_API_TOKEN``) and a Flask session cookie (HttpOnly, SameSite=Lax). With no
  token configured the pages are open only to loopback callers of a loopback-bound
  ``herald serve`` (web/security.py), and say so; anything else is closed (issue 11).
- Sessions are revocable (issue 11). The cookie's MAC key is derived from the data dir's
  secret *and* the admin token, so rotating the token ends every session. Each session
  carries a random id, the session generation it was issued under, its sign-in and last
  use times: sign-out records the id as revoked, "sign out everywhere" starts a new
  generation, and a session idle longer than HERALD_ADMIN_IDLE_SECONDS (or older than
  HERALD_ADMIN_SESSION_MAX_SECONDS) is refused. Revocations and generations are kept in
  the store's create-only inbound-event documents (kinds ``admin-session-revoked`` and
  ``admin-session-generation``), so they survive a restart.
- Failed logins are limited per client address (HERALD_ADMIN_LOGIN_MAX_ATTEMPTS per
  HERALD_ADMIN_LOGIN_WINDOW_SECONDS, 429 after that), in memory: `herald serve` is one process.
- Every action is a POST carrying the session's CSRF token in a hidden field.

Status contract: an HTML GET without a session redirects to the login page (embedded);
anything else unauthenticated is 401; a missing CSRF token is 400, a wrong one 403;
IAP's keys unreachable is 503.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
from collections import deque
from datetime import timedelta
from typing import Any, Protocol

from flask import Flask, current_app, g, render_template, request, session

from herald.domain.strict import same_secret
from herald.ports.container import Container
from herald.settings import Settings
from herald.web.security import open_without_credentials

log = logging.getLogger(__name__)

IAP_HEADER = "x-goog-iap-jwt-assertion"
SESSION_USER = "admin_user"
SESSION_CSRF = "admin_csrf"
SESSION_ID = "admin_sid"
SESSION_GENERATION = "admin_gen"
SESSION_STARTED = "admin_iat"
SESSION_SEEN = "admin_seen"
CSRF_FIELD = "csrf_token"
REVOKED_KIND = "admin-session-revoked"
GENERATION_KIND = "admin-session-generation"


def configure(app: Flask, c: Container) -> None:
    """Session cookie settings. The MAC key is derived from the container's secret and the
    admin token (never stored), so a rotated token invalidates every cookie issued before."""
    if not app.secret_key:
        token_digest = hashlib.sha256(admin_token(c.settings).encode()).digest()
        app.secret_key = hmac.new(c.secret, b"herald-admin-session\0" + token_digest, hashlib.sha256).hexdigest()
    app.config.update(
        SESSION_COOKIE_NAME="herald_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=c.settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=c.settings.admin_session_max_seconds),
    )


def admin_token(settings: Settings) -> str:
    return settings.admin_token or settings.api_token


def open_on_loopback(settings: Settings) -> bool:
    """No admin token, and this request may be served without credentials (web/security.py)."""
    return settings.backend != "gcp" and not admin_token(settings) and open_without_credentials()


class _Verifier(Protocol):
    def verify(self, assertion: str) -> str: ...


def _iap(settings: Settings) -> _Verifier:
    """The IAP verifier the composition root gave the app (herald.bootstrap_gcp.iap_verifier)."""
    verifier = current_app.extensions.get("herald.iap")
    if verifier is None:
        from herald.ports.auth import AuthError

        raise AuthError(503, "no IAP verifier configured for this app")
    return verifier  # type: ignore[no-any-return]


def identify(c: Container) -> tuple[str | None, int, str]:
    """(user, refusal status, reason): the user when authenticated, else why not."""
    settings = c.settings
    if settings.backend == "gcp":
        from herald.ports.auth import AuthError

        if not settings.iap_audience:
            return None, 503, "HERALD_IAP_AUDIENCE is not set: the admin interface is closed"
        try:
            return _iap(settings).verify(request.headers.get(IAP_HEADER, "")), 200, ""
        except AuthError as exc:
            log.warning("admin refused", extra={"path": request.path, "status": exc.status, "reason": exc.reason})
            return None, exc.status, "not signed in through IAP" if exc.status == 401 else "try again shortly"
    if open_on_loopback(settings):
        return "local", 200, ""
    user = session.get(SESSION_USER)
    if not user or not admin_token(settings):
        return None, 401, "sign in first"
    problem = _session_problem(c)
    if problem:
        log.info("admin session refused", extra={"reason": problem, "path": request.path})
        session.clear()
        return None, 401, "your session has ended; sign in again"
    session[SESSION_SEEN] = int(c.clock.now().timestamp())
    return str(user), 200, ""


def _session_problem(c: Container) -> str:
    """Why the current session cookie no longer counts, or ""."""
    now = int(c.clock.now().timestamp())
    sid, generation = session.get(SESSION_ID), session.get(SESSION_GENERATION)
    started, seen = session.get(SESSION_STARTED), session.get(SESSION_SEEN)
    if not isinstance(sid, str) or not (isinstance(generation, int) and isinstance(started, int)):
        return "session from an older version"
    if not isinstance(seen, int) or now - seen > c.settings.admin_idle_seconds:
        return "idle timeout"
    if now - started > c.settings.admin_session_max_seconds:
        return "session too old"
    if generation != current_generation(c):
        return "signed out everywhere"
    if c.store.get_inbound_event(REVOKED_KIND, sid) is not None:
        return "signed out"
    return ""


def current_generation(c: Container) -> int:
    """The session generation: the highest n with a ``generation`` record (0 when none).
    Records are only ever added, so from the last value seen one lookup is enough."""
    cache: dict[int, int] = current_app.extensions.setdefault("herald.session_generation", {})
    n = cache.get(id(c.store), 0)
    while c.store.get_inbound_event(GENERATION_KIND, str(n + 1)) is not None:
        n += 1
    cache[id(c.store)] = n
    return n


def sign_out_everywhere(c: Container, actor: str) -> int:
    """Start a new session generation: every session issued before is refused from now on."""
    while True:
        n = current_generation(c) + 1
        doc = {"actor": actor, "at": c.clock.now().isoformat()}
        if c.store.put_inbound_event(GENERATION_KIND, str(n), doc, c.clock.now()):
            return n


def end_session(c: Container) -> None:
    """Sign-out: this session's id is recorded as revoked, so a copy of the cookie is refused too."""
    sid = session.get(SESSION_ID)
    if isinstance(sid, str) and sid:
        c.store.put_inbound_event(REVOKED_KIND, sid, {"at": c.clock.now().isoformat()}, c.clock.now())
    session.clear()


class LoginLimiter:
    """Failed sign-ins per client address in a sliding window (in memory: one process)."""

    def __init__(self, max_attempts: int, window_seconds: int) -> None:
        self.max_attempts = max_attempts
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float) -> int:
        """Seconds until ``client`` may try again; 0 = now."""
        with self._lock:
            recent = self._recent(client, now)
            if len(recent) < self.max_attempts:
                return 0
            return max(1, math.ceil(recent[0] + self.window - now))

    def failed(self, client: str, now: float) -> None:
        with self._lock:
            self._recent(client, now).append(now)
            if len(self._failures) > 10_000:  # bound the memory a flood of addresses can take
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window}

    def _recent(self, client: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        return recent


def login_limiter(c: Container) -> LoginLimiter:
    limiter = current_app.extensions.get("herald.login_limiter")
    if limiter is None:
        limiter = LoginLimiter(c.settings.admin_login_max_attempts, c.settings.admin_login_window_seconds)
        current_app.extensions["herald.login_limiter"] = limiter
    return limiter


def user() -> str:
    return str(g.get("admin_user") or "")


def check_login(c: Container, supplied: str) -> bool:
    expected = admin_token(c.settings)
    return bool(expected) and same_secret(supplied, expected)


def start_session(c: Container, name: str) -> None:
    now = int(c.clock.now().timestamp())
    session.clear()
    session.permanent = True
    session[SESSION_USER] = name
    session[SESSION_CSRF] = secrets.token_urlsafe(32)
    session[SESSION_ID] = secrets.token_urlsafe(18)
    session[SESSION_GENERATION] = current_generation(c)
    session[SESSION_STARTED] = now
    session[SESSION_SEEN] = now


def csrf_token() -> str:
    token = session.get(SESSION_CSRF)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_CSRF] = token
    return str(token)


def csrf_refusal() -> tuple[Any, int] | None:
    supplied = request.form.get(CSRF_FIELD, "")
    expected = str(session.get(SESSION_CSRF, ""))
    if not supplied:
        return refusal(400, "The form is missing its CSRF token; reload the page and try again.")
    if not expected or not same_secret(supplied, expected):
        return refusal(403, "The form's CSRF token does not match this session; reload the page and try again.")
    return None


def refusal(status: int, message: str) -> tuple[Any, int]:
    return render_template("admin/refused.html", status=status, message=message), status


def iap_user(c: Container) -> str | None:
    """The IAP-verified user of this request (gcp), or None."""
    if c.settings.backend != "gcp" or not c.settings.iap_audience or not request.headers.get(IAP_HEADER):
        return None
    from herald.ports.auth import AuthError

    try:
        return _iap(c.settings).verify(request.headers[IAP_HEADER])
    except AuthError as exc:
        log.warning("IAP assertion refused", extra={"path": request.path, "reason": exc.reason})
        return None


def api_actor(c: Container) -> str:
    """Who called the JSON API: the IAP user when IAP vouches for one, else the token holder."""
    return iap_user(c) or ("api token" if c.settings.api_token else "local")
