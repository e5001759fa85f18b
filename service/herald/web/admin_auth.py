"""Who may use /admin, and proof that an action was meant.

- gcp backend: the admin service sits behind IAP, which signs every request it lets
  through with an ES256 JWT in ``x-goog-iap-jwt-assertion``. Cloud Run's ingress is
  trusted only after that JWT verifies for our audience (IAP's own advice: headers
  alone can be forged if anything bypasses IAP).
  https://cloud.google.com/iap/docs/signed-headers-howto
- embedded backend: a login page with the admin token (``HERALD_ADMIN_TOKEN``, else
  ``HERALD_API_TOKEN``) and a Flask session cookie (HttpOnly, SameSite=Lax). With no
  token configured the pages are open on loopback only, and say so.
- Every action is a POST carrying the session's CSRF token in a hidden field.

Status contract: an HTML GET without a session redirects to the login page (embedded);
anything else unauthenticated is 401; a missing CSRF token is 400, a wrong one 403;
IAP's keys unreachable is 503.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, current_app, g, render_template, request, session

from herald.bootstrap import Container
from herald.settings import Settings

log = logging.getLogger(__name__)

IAP_HEADER = "x-goog-iap-jwt-assertion"
IAP_ISSUER = "https://cloud.google.com/iap"
SESSION_USER = "admin_user"
SESSION_CSRF = "admin_csrf"
CSRF_FIELD = "csrf_token"


def configure(app: Flask, c: Container) -> None:
    """Session cookie settings; the key is derived from the container's secret (never stored)."""
    if not app.secret_key:
        app.secret_key = hmac.new(c.secret, b"herald-admin-session", hashlib.sha256).hexdigest()
    app.config.update(
        SESSION_COOKIE_NAME="herald_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=c.settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )


def admin_token(settings: Settings) -> str:
    return settings.admin_token or settings.api_token


def open_on_loopback(settings: Settings) -> bool:
    return settings.backend != "gcp" and not admin_token(settings) and settings.is_loopback


class IapVerifier:
    """Verify IAP's JWT: ES256 signature against IAP's keys, expiry, audience, issuer, e-mail."""

    def __init__(self, audience: str, certs_url: str, timeout: float = 5.0) -> None:
        from herald.adapters.gcp.oidc import CachedCertsRequest

        self.audience = audience
        self.certs_url = certs_url
        self.request = CachedCertsRequest(timeout=timeout)

    def verify(self, assertion: str) -> str:
        """The user's e-mail; raises herald.adapters.gcp.oidc.AuthError (401 / 503)."""
        import google.auth.exceptions
        from google.oauth2 import id_token

        from herald.adapters.gcp.oidc import AuthError

        if not assertion:
            raise AuthError(401, "no IAP assertion")
        try:
            claims = id_token.verify_token(
                assertion, self.request, audience=self.audience, certs_url=self.certs_url, clock_skew_in_seconds=30
            )
        except google.auth.exceptions.TransportError as exc:
            raise AuthError(503, f"IAP keys unavailable: {exc}") from exc
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            raise AuthError(401, f"invalid IAP assertion: {exc}") from exc
        if claims.get("iss") != IAP_ISSUER:
            raise AuthError(401, f"wrong issuer {claims.get('iss')!r}")
        email = str(claims.get("email") or "")
        if not email:
            raise AuthError(401, "IAP assertion without e-mail")
        return email.removeprefix("accounts.google.com:")


def _iap(settings: Settings) -> IapVerifier:
    verifier = current_app.extensions.get("herald.iap")
    if verifier is None:
        verifier = IapVerifier(settings.iap_audience, settings.iap_certs_url, settings.http_timeout_seconds)
        current_app.extensions["herald.iap"] = verifier
    return verifier


def identify(c: Container) -> tuple[str | None, int, str]:
    """(user, refusal status, reason): the user when authenticated, else why not."""
    settings = c.settings
    if settings.backend == "gcp":
        from herald.adapters.gcp.oidc import AuthError

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
    if user and admin_token(settings):
        return str(user), 200, ""
    return None, 401, "sign in first"


def user() -> str:
    return str(g.get("admin_user") or "")


def check_login(c: Container, supplied: str) -> bool:
    expected = admin_token(c.settings)
    return bool(expected) and hmac.compare_digest(supplied.encode(), expected.encode())


def start_session(name: str) -> None:
    session.clear()
    session.permanent = True
    session[SESSION_USER] = name
    session[SESSION_CSRF] = secrets.token_urlsafe(32)


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
    if not expected or not hmac.compare_digest(supplied.encode(), expected.encode()):
        return refusal(403, "The form's CSRF token does not match this session; reload the page and try again.")
    return None


def refusal(status: int, message: str) -> tuple[Any, int]:
    return render_template("admin/refused.html", status=status, message=message), status


def api_actor(c: Container) -> str:
    """Who called the JSON API: the IAP user when IAP vouches for one, else the token holder."""
    if c.settings.backend == "gcp" and c.settings.iap_audience and request.headers.get(IAP_HEADER):
        from herald.adapters.gcp.oidc import AuthError

        try:
            return _iap(c.settings).verify(request.headers[IAP_HEADER])
        except AuthError:
            pass
    return "api token"
