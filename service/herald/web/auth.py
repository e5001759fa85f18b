"""Who may call what.

- Internal routes (/tasks, /scheduler, /pubsub): on gcp, a Google OIDC token from the
  expected service account; on the embedded backend, the in-process dispatcher's
  HMAC token (a process that can read the data dir's secret is Herald itself).
- /api: ``Authorization: Bearer <HERALD_API_TOKEN>``; with no token configured the
  API is open only when Herald listens on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, request

from herald.bootstrap import Container
from herald.web.errors import error

F = TypeVar("F", bound=Callable[..., Any])
INTERNAL_HEADER = "X-Herald-Internal"


def container() -> Container:
    return current_app.extensions["herald"]  # type: ignore[no-any-return]


def internal_token(secret: bytes) -> str:
    return hmac.new(secret, b"herald-internal-call", hashlib.sha256).hexdigest()


def _internal_refusal(c: Container) -> tuple[Any, int] | None:
    verifier = current_app.extensions.get("herald.oidc")
    if verifier is not None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return error(401, "missing bearer token")
        from herald.adapters.gcp.oidc import AuthError

        try:
            claims = verifier.verify(header.removeprefix("Bearer ").strip())
        except AuthError as exc:
            return error(exc.status, exc.reason)
        request.environ["herald.caller"] = claims.get("email", "")
        return None
    supplied = request.headers.get(INTERNAL_HEADER, "")
    if not supplied:
        return error(401, "internal route: caller not authenticated")
    if not hmac.compare_digest(supplied, internal_token(c.secret)):
        return error(403, "internal route: caller not allowed")
    return None


def internal(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        refusal = _internal_refusal(container())
        return refusal if refusal is not None else view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def api_token_ok(c: Container) -> tuple[Any, int] | None:
    token = c.settings.api_token
    if not token:
        if c.settings.is_loopback:
            return None
        return error(401, "HERALD_API_TOKEN is not set; the API is closed when not on loopback")
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return error(401, "missing bearer token")
    if not hmac.compare_digest(header.removeprefix("Bearer ").strip(), token):
        return error(403, "invalid token")
    return None
