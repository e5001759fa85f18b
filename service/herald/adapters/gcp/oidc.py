"""Verification of the Google OIDC tokens that Cloud Tasks, Pub/Sub push and Cloud
Scheduler send to Herald's internal routes (ARCHITECTURE.md decision 6).

A token is accepted only when its RS256 signature verifies against Google's current
certificates, it is not expired, its audience is ours, its issuer is Google, and its
``email`` is one of the expected invoker service accounts with ``email_verified``.
https://cloud.google.com/run/docs/authenticating/service-to-service
https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions

Status contract (decided here, used as is by the routes):
- 401: no bearer token, or a token that is not a valid Google ID token *for us*:
  garbage, unsigned / ``alg: none``, bad signature, expired, wrong issuer, wrong
  audience (a token minted for another service does not authenticate anyone here).
- 403: a valid token for us, from a caller that may not invoke Herald: an e-mail not
  in the allowed list, no e-mail, or an unverified one.
- 503: Google's certificates could not be fetched; the caller retries later (Cloud
  Tasks, Pub/Sub and Scheduler all retry non-2xx) and nothing is refused for good.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import requests
from google.oauth2 import id_token

from herald.ports.auth import AuthError  # re-exported: the verifiers here raise it

if TYPE_CHECKING:
    from herald.settings import Settings

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
_MAX_AGE = re.compile(r"max-age=(\d+)")


class _CertsResponse:
    """What google.auth's ``_fetch_certs`` reads from a transport response."""

    def __init__(self, status: int, data: bytes) -> None:
        self.status = status
        self.data = data
        self.headers: dict[str, str] = {}


class CachedCertsRequest(google.auth.transport.Request):
    """A google.auth transport ``Request`` that caches the certificate document.

    Google rotates its signing keys and says how long a copy may be kept with
    ``Cache-Control: max-age``; fetching the certificates on every request would add a
    round trip to each task. Only successful GETs are cached, for ``max-age`` seconds
    (``default_ttl`` when the header has none). Thread-safe.
    """

    def __init__(
        self,
        timeout: float = 5.0,
        default_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        self._inner = google.auth.transport.requests.Request(session=session or requests.Session())
        self._timeout = timeout
        self._default_ttl = default_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, _CertsResponse]] = {}
        self.fetches = 0

    def __call__(
        self, url: Any, method: Any = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any
    ) -> Any:
        if method != "GET":
            return self._inner(url, method=method, body=body, headers=headers, timeout=self._timeout)
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            response = self._inner(url, method="GET", headers=headers, timeout=self._timeout)
            self.fetches += 1
            if response.status == 200:
                match = _MAX_AGE.search(response.headers.get("Cache-Control", ""))
                ttl = float(match.group(1)) if match else self._default_ttl
                self._cache[url] = (self._clock() + ttl, _CertsResponse(response.status, response.data))
            return response

    def known_key_ids(self, url: str) -> set[str] | None:
        """Key ids in the cached document, None when nothing is cached."""
        with self._lock:
            cached = self._cache.get(url)
        if cached is None:
            return None
        try:
            certs = json.loads(cached[1].data)
        except ValueError:
            return None
        if "keys" in certs:  # JWK set
            return {str(key.get("kid")) for key in certs["keys"]}
        return set(certs)

    def invalidate(self, url: str) -> None:
        with self._lock:
            self._cache.pop(url, None)


def _header(token: str) -> Mapping[str, Any]:
    try:
        segment = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, IndexError) as exc:
        raise AuthError(401, f"malformed token: {exc}") from exc
    if not isinstance(header, dict):
        raise AuthError(401, "malformed token header")
    return header


class OidcVerifier:
    def __init__(
        self,
        audience: str | Iterable[str],
        allowed_emails: Iterable[str],
        certs_url: str = GOOGLE_CERTS_URL,
        clock_skew: int = 10,
        request: CachedCertsRequest | None = None,
    ) -> None:
        self.audience = [audience] if isinstance(audience, str) else list(audience)
        if not self.audience or not all(self.audience):
            raise ValueError("an OIDC audience is required")
        self.allowed_emails = frozenset(email.strip().lower() for email in allowed_emails if email.strip())
        if not self.allowed_emails:
            raise ValueError("at least one allowed invoker e-mail is required")
        self.certs_url = certs_url
        self.clock_skew = clock_skew
        self.request = request or CachedCertsRequest()

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier:
        return cls(
            settings.oidc_audience,
            settings.oidc_allowed_emails,
            certs_url=settings.oidc_certs_url,
            clock_skew=settings.oidc_clock_skew_seconds,
            request=CachedCertsRequest(timeout=settings.http_timeout_seconds),
        )

    def verify_header(self, authorization: str | None) -> Mapping[str, Any]:
        """Claims of the ``Authorization: Bearer <token>`` header; raises AuthError."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "no bearer token")
        return self.verify(token.strip())

    def verify(self, token: str) -> Mapping[str, Any]:
        header = _header(token)
        if header.get("alg") != "RS256":  # Google signs ID tokens with RS256 only; refuse "none" early
            raise AuthError(401, f"unexpected token algorithm {header.get('alg')!r}")
        kid = header.get("kid")
        known = self.request.known_key_ids(self.certs_url)
        if kid and known is not None and kid not in known:
            # A key newer than our cached copy (Google publishes keys before use).
            self.request.invalidate(self.certs_url)
        claims = self._verify_signature(token)
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise AuthError(401, f"wrong issuer {claims.get('iss')!r}")
        email = str(claims.get("email") or "").lower()
        if not email:
            raise AuthError(403, "token has no e-mail")
        if claims.get("email_verified") is not True:
            raise AuthError(403, f"e-mail {email} not verified")
        if email not in self.allowed_emails:
            raise AuthError(403, f"caller {email} is not an allowed invoker")
        return claims

    def _verify_signature(self, token: str) -> Mapping[str, Any]:
        try:
            return id_token.verify_token(
                token,
                self.request,
                audience=self.audience,
                certs_url=self.certs_url,
                clock_skew_in_seconds=self.clock_skew,
            )
        except google.auth.exceptions.TransportError as exc:
            log.warning("cannot fetch OIDC certificates from %s: %s", self.certs_url, exc)
            raise AuthError(503, f"certificates unavailable: {exc}") from exc
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            # Bad signature, expired, wrong audience, malformed: google.auth raises
            # ValueError subclasses (InvalidValue, MalformedError) for all of them.
            raise AuthError(401, f"invalid token: {exc}") from exc
