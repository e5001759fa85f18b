"""Who may call what.

- Internal routes (/tasks, /scheduler, /pubsub): on gcp, a Google OIDC token from the
  expected service account; on the embedded backend, the in-process dispatcher's
  HMAC token (a process that can read the data dir's secret is Herald itself).
- /api: ``Authorization: Bearer <HERALD_API_TOKEN>``; with no token configured the
  API is open only to loopback callers of a loopback-bound ``herald serve``
  (web/security.py); every other start (gunicorn, the image) answers 401 (issue 11).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, request

from herald.domain.strict import same_secret
from herald.ports.container import Container
from herald.web.errors import error
from herald.web.security import open_without_credentials

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
INTERNAL_HEADER = "X-Herald-Internal"


def container() -> Container:
    return current_app.extensions["herald"]  # type: ignore[no-any-return]


def internal_token(secret: bytes) -> str:
    return hmac.new(secret, b"herald-internal-call", hashlib.sha256).hexdigest()


def _internal_refusal(c: Container) -> tuple[Any, int] | None:
    verifiers = current_app.extensions.get("herald.oidc")
    if verifiers is not None:
        return _oidc_refusal(verifiers)
    supplied = request.headers.get(INTERNAL_HEADER, "")
    if not supplied:
        return error(401, "internal route: caller not authenticated")
    if not same_secret(supplied, internal_token(c.secret)):
        return error(403, "internal route: caller not allowed")
    return None


def _oidc_refusal(verifiers: Mapping[str, Any]) -> tuple[Any, int] | None:
    """gcp: a Google OIDC token for our audience from this route family's invoker
    (herald.bootstrap_gcp.internal_verifiers). 401 / 403 / 503 as OidcVerifier decides;
    the reason is logged, never returned."""
    from herald.ports.auth import AuthError

    family = request.path.strip("/").split("/", 1)[0]
    verifier = verifiers.get(family)
    if verifier is None:  # an internal route outside the known families: refuse, never open
        log.error("no OIDC verifier for internal route family %r", family)
        return error(403, "internal route: caller not allowed")
    try:
        claims = verifier.verify_header(request.headers.get("Authorization"))
    except AuthError as exc:
        log.warning("internal route refused", extra={"path": request.path, "status": exc.status, "reason": exc.reason})
        if exc.status == 503:  # Google's certificates unreachable: the caller retries, nothing is refused for good
            body, status = error(503, "cannot verify the caller now; retry later")
            body.headers["Retry-After"] = "10"
            return body, status
        return error(exc.status, "internal route: caller not authenticated" if exc.status == 401 else "forbidden")
    request.environ["herald.caller"] = claims.get("email", "")
    return None


def internal(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        refusal = _internal_refusal(container())
        return refusal if refusal is not None else view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def api_token_ok(c: Container) -> tuple[Any, int] | None:
    """None when the caller may use /api: the bearer token, a verified IAP assertion (gcp
    admin service), or no token configured and a loopback caller of loopback-bound serve."""
    from herald.web.admin_auth import IAP_HEADER, iap_user

    if c.settings.backend == "gcp" and c.settings.iap_audience and request.headers.get(IAP_HEADER):
        if iap_user(c) is not None:
            return None
        return error(401, "IAP assertion does not verify")
    token = c.settings.api_token
    if not token:
        if open_without_credentials():
            return None
        return error(401, "HERALD_API_TOKEN is not set: the API is open only to `herald serve` on loopback")
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return error(401, "missing bearer token")
    if not same_secret(header.removeprefix("Bearer ").strip(), token):
        return error(403, "invalid token")
    return None
