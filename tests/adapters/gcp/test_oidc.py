"""OIDC verification with tokens signed by a test RSA key, certificates served by a
local HTTP server in Google's x509 format (https://www.googleapis.com/oauth2/v1/certs)."""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt
from tools.gcp_stack import self_signed_cert

from herald.adapters.gcp.oidc import AuthError, CachedCertsRequest, OidcVerifier

AUDIENCE = "https://worker.example.run.app"
INVOKER = "herald-invoker@herald-test.iam.gserviceaccount.com"


@functools.cache
def make_key(kid: str, variant: int = 0) -> tuple[crypt.RSASigner, str]:
    """A signer and its self-signed x509 certificate (cached: RSA key generation is slow)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return crypt.RSASigner.from_string(pem, key_id=kid), self_signed_cert(key, "test", days=1)


class CertsServer:
    def __init__(self) -> None:
        self.certs: dict[str, str] = {}
        self.hits = 0
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.certs).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/v1/certs"


@pytest.fixture
def certs() -> Iterator[CertsServer]:
    server = CertsServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def signer(certs: CertsServer) -> crypt.RSASigner:
    signer, pem = make_key("key-1")
    certs.certs["key-1"] = pem
    return signer


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "sub": "1234567890",
        "azp": "1234567890",
        "email": INVOKER,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(signer: crypt.RSASigner, **overrides: Any) -> str:
    return jwt.encode(signer, claims(**overrides)).decode()


def verifier(certs: CertsServer, **kw: Any) -> OidcVerifier:
    return OidcVerifier(AUDIENCE, [INVOKER], certs_url=certs.url, clock_skew=10, **kw)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_token_returns_claims(certs: CertsServer, signer: crypt.RSASigner) -> None:
    result = verifier(certs).verify_header(f"Bearer {token(signer)}")
    assert result["email"] == INVOKER


def test_email_match_is_case_insensitive(certs: CertsServer, signer: crypt.RSASigner) -> None:
    assert verifier(certs).verify(token(signer, email=INVOKER.upper()))["aud"] == AUDIENCE


def test_certificates_are_fetched_once_and_cached(certs: CertsServer, signer: crypt.RSASigner) -> None:
    check = verifier(certs)
    for _ in range(5):
        check.verify(token(signer))
    assert certs.hits == 1


def test_cache_expires_after_max_age(certs: CertsServer, signer: crypt.RSASigner) -> None:
    now = [1000.0]
    check = verifier(certs, request=CachedCertsRequest(clock=lambda: now[0]))
    check.verify(token(signer))
    now[0] += 3599
    check.verify(token(signer))
    assert certs.hits == 1
    now[0] += 2
    check.verify(token(signer))
    assert certs.hits == 2


def test_a_new_key_id_refetches_the_certificates(certs: CertsServer, signer: crypt.RSASigner) -> None:
    check = verifier(certs)
    check.verify(token(signer))
    rotated, pem = make_key("key-2")
    certs.certs["key-2"] = pem
    assert check.verify(token(rotated))["email"] == INVOKER
    assert certs.hits == 2


@pytest.mark.parametrize(
    ("case", "overrides", "status"),
    [
        ("wrong audience", {"aud": "https://other.example.run.app"}, 401),
        ("expired", {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, 401),
        ("wrong issuer", {"iss": "https://evil.example.com"}, 401),
        ("wrong email", {"email": "someone@herald-test.iam.gserviceaccount.com"}, 403),
        ("no email", {"email": None}, 403),
        ("email not verified", {"email_verified": False}, 403),
        ("email_verified as a string", {"email_verified": "true"}, 403),
    ],
)
def test_refused_claims(
    certs: CertsServer, signer: crypt.RSASigner, case: str, overrides: dict[str, Any], status: int
) -> None:
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify(token(signer, **overrides))
    assert caught.value.status == status, case


def test_token_signed_by_another_key_is_refused(certs: CertsServer, signer: crypt.RSASigner) -> None:
    impostor, _ = make_key("key-1", variant=1)  # same key id, different key
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify(token(impostor))
    assert caught.value.status == 401


def test_unknown_key_id_is_refused(certs: CertsServer, signer: crypt.RSASigner) -> None:
    stranger, _ = make_key("key-unknown")
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify(token(stranger))
    assert caught.value.status == 401


def test_unsigned_alg_none_is_refused(certs: CertsServer, signer: crypt.RSASigner) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{header}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify(unsigned)
    assert caught.value.status == 401


def test_rs256_header_without_signature_is_refused(certs: CertsServer, signer: crypt.RSASigner) -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": "key-1", "typ": "JWT"}).encode())
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify(f"{header}.{b64(json.dumps(claims()).encode())}.")
    assert caught.value.status == 401


def test_tampered_payload_is_refused(certs: CertsServer, signer: crypt.RSASigner) -> None:
    header, _, signature = token(signer).split(".")
    forged = b64(json.dumps(claims(email="admin@herald-test.iam.gserviceaccount.com")).encode())
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify(f"{header}.{forged}.{signature}")
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer garbage", "Bearer a.b.c", "Bearer ....", "Bearer é"],
)
def test_missing_or_garbage_tokens_are_401(certs: CertsServer, signer: crypt.RSASigner, authorization: str) -> None:
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify_header(authorization)
    assert caught.value.status == 401


def test_unreachable_certificates_are_503_not_a_refusal(certs: CertsServer, signer: crypt.RSASigner) -> None:
    certs.status = 500
    with pytest.raises(AuthError) as caught:
        verifier(certs).verify(token(signer))
    assert caught.value.status == 503
    certs.status = 200  # a failed fetch is not cached
    verifier(certs).verify(token(signer))


def test_configuration_is_required() -> None:
    with pytest.raises(ValueError):
        OidcVerifier("", [INVOKER])
    with pytest.raises(ValueError):
        OidcVerifier(AUDIENCE, [])
