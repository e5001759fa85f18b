"""Why a caller was refused, as every verifier of callers reports it (OIDC on internal
routes, IAP on admin pages): the web layer maps it to 401 / 403 / 503."""

from __future__ import annotations


class AuthError(Exception):
    """The request is not authenticated (401), not allowed (403) or cannot be checked
    now (503). ``reason`` is for logs, never for the response body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
