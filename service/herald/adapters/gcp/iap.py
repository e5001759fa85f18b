"""Identity-Aware Proxy: verify the signed header IAP puts on every request to the admin
service (https://cloud.google.com/iap/docs/signed-headers-howto)."""

from __future__ import annotations

import google.auth.exceptions
from google.oauth2 import id_token

from herald.adapters.gcp.oidc import CachedCertsRequest
from herald.ports.auth import AuthError

IAP_ISSUER = "https://cloud.google.com/iap"


class IapVerifier:
    """Verify IAP's JWT: ES256 signature against IAP's keys, expiry, audience, issuer, e-mail."""

    def __init__(self, audience: str, certs_url: str, timeout: float = 5.0) -> None:
        self.audience = audience
        self.certs_url = certs_url
        self.request = CachedCertsRequest(timeout=timeout)

    def verify(self, assertion: str) -> str:
        """The user's e-mail; raises AuthError (401 / 503)."""
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
