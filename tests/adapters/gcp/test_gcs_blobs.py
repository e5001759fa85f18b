"""GCS blob store against fake-gcs-server; V4 signatures verified by the test itself.

fake-gcs-server serves signed URLs without checking their signature, so each test
rebuilds the canonical request and string-to-sign from the URL, as Google specifies
(https://cloud.google.com/storage/docs/authentication/signatures), and verifies the
RSA-SHA256 signature with the test key's public key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import google.auth.credentials
import pytest
import requests
import requests.adapters
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from herald.adapters.gcp.gcs_blobs import BlobStoreError, GcsBlobStore, build_client, content_disposition

pytestmark = pytest.mark.emulator

KEY_EMAIL = "herald-signer@herald-test.iam.gserviceaccount.com"
RUNTIME_EMAIL = "herald-runtime@herald-test.iam.gserviceaccount.com"


@functools.cache
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    pem = private_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "signer.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "herald-test",
                "private_key_id": "test-key-1",
                "private_key": pem.decode(),
                "client_email": KEY_EMAIL,
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


@pytest.fixture
def bucket(gcs_emulator: str) -> Iterator[str]:
    client = build_client("herald-test", gcs_emulator)
    name = f"herald-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name, timeout=10)
    yield name


def store(gcs_emulator: str, bucket: str, **kw: Any) -> GcsBlobStore:
    return GcsBlobStore(build_client("herald-test", gcs_emulator), bucket, timeout=10, **kw)


def verify_v4(url: str, signer_email: str) -> dict[str, str]:
    """Check a V4 signed GET URL's signature with the test public key; return its query."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    email, scope = query["X-Goog-Credential"].split("/", 1)
    assert email == signer_email
    assert scope.endswith("/auto/storage/goog4_request")
    assert query["X-Goog-SignedHeaders"] == "host"

    def enc(text: str) -> str:
        return quote(text, safe="-_.~")

    canonical_query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(pairs) if k != "X-Goog-Signature")
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", query["X-Goog-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    private_key().public_key().verify(
        bytes.fromhex(query["X-Goog-Signature"]), string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - signed_at) < timedelta(minutes=5)
    return query


def test_put_get_exists_and_metadata(gcs_emulator: str, bucket: str) -> None:
    blobs = store(gcs_emulator, bucket)
    assert blobs.exists("runs/r1/board-pack.pdf") is False
    blobs.put("runs/r1/board-pack.pdf", b"%PDF-1.7 test", "application/pdf", {"run_id": "r1", "report": "board"})

    assert blobs.exists("runs/r1/board-pack.pdf") is True
    assert blobs.get("runs/r1/board-pack.pdf") == (b"%PDF-1.7 test", "application/pdf")
    stored = blobs.bucket.get_blob("runs/r1/board-pack.pdf", timeout=10)
    assert stored is not None
    assert stored.metadata == {"run_id": "r1", "report": "board"}
    assert stored.size == len(b"%PDF-1.7 test")


def test_put_overwrites(gcs_emulator: str, bucket: str) -> None:
    blobs = store(gcs_emulator, bucket)
    blobs.put("k.csv", b"a,b\n", "text/csv")
    blobs.put("k.csv", b"a,b\n1,2\n", "text/csv")
    assert blobs.get("k.csv") == (b"a,b\n1,2\n", "text/csv")


def test_get_missing_is_key_error(gcs_emulator: str, bucket: str) -> None:
    with pytest.raises(KeyError):
        store(gcs_emulator, bucket).get("nope.pdf")


def test_signed_url_with_key_file_verifies_and_serves(gcs_emulator: str, bucket: str, key_file: Path) -> None:
    blobs = store(gcs_emulator, bucket, signing_key_file=str(key_file))
    blobs.put("runs/r2/report.pdf", b"%PDF report", "application/pdf")

    url = blobs.signed_url("runs/r2/report.pdf", timedelta(minutes=15), filename="Board pack \u2013 März.pdf")

    query = verify_v4(url, KEY_EMAIL)
    assert query["X-Goog-Expires"] == "900"
    assert query["response-content-disposition"] == content_disposition("Board pack \u2013 März.pdf")
    assert urlsplit(url).path == f"/{bucket}/runs/r2/report.pdf"
    with urllib.request.urlopen(url, timeout=10) as response:  # the emulator serves it (unchecked)
        assert response.read() == b"%PDF report"


def test_tampered_signed_url_does_not_verify(gcs_emulator: str, bucket: str, key_file: Path) -> None:
    url = store(gcs_emulator, bucket, signing_key_file=str(key_file)).signed_url("a/b.pdf", timedelta(hours=1))
    tampered = url.replace("X-Goog-Expires=3600", "X-Goog-Expires=3601")
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        verify_v4(tampered, KEY_EMAIL)


def test_lifetime_is_clamped_to_seven_days_and_says_so(
    gcs_emulator: str, bucket: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blobs = store(gcs_emulator, bucket, signing_key_file=str(key_file))
    with caplog.at_level(logging.WARNING, logger="herald.adapters.gcp.gcs_blobs"):
        url = blobs.signed_url("a/b.pdf", timedelta(days=30))
    assert verify_v4(url, KEY_EMAIL)["X-Goog-Expires"] == "604800"
    assert "clamped" in caplog.text
    with pytest.raises(ValueError):
        blobs.signed_url("a/b.pdf", timedelta(0))


def test_default_filename_is_the_key_basename() -> None:
    assert content_disposition("report.pdf") == "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    assert 'filename="a_b_.pdf"' in content_disposition('a"b\\.pdf')


class FakeRuntimeCredentials(google.auth.credentials.Credentials):
    """Cloud Run's default credentials: no private key, a token from refresh()."""

    service_account_email = RUNTIME_EMAIL

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"ya29.fake-{self.refreshes}"
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)  # google.auth: naive UTC


class FakeSignBlob:
    """IAM Credentials signBlob at the outermost HTTP seam (requests' adapter); every
    other request (the emulator's) goes through untouched."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[requests.PreparedRequest] = []
        self._send = requests.adapters.HTTPAdapter.send

    def send(self, adapter: requests.adapters.HTTPAdapter, request: requests.PreparedRequest, **kw: Any) -> Any:
        if urlsplit(request.url or "").hostname != "iamcredentials.googleapis.com":
            return self._send(adapter, request, **kw)
        self.calls.append(request)
        response = requests.Response()
        response.status_code = self.status
        response.request = request
        response.url = request.url or ""
        response.headers["Content-Type"] = "application/json"
        if self.status == 200:
            payload = base64.b64decode(json.loads(request.body or b"{}")["payload"])
            signature = private_key().sign(payload, padding.PKCS1v15(), hashes.SHA256())
            body = {"keyId": "runtime-key", "signedBlob": base64.b64encode(signature).decode()}
        else:
            body = {"error": {"code": self.status, "status": "PERMISSION_DENIED", "message": "denied"}}
        response._content = json.dumps(body).encode()
        return response


@pytest.fixture
def sign_blob(monkeypatch: pytest.MonkeyPatch) -> FakeSignBlob:
    fake = FakeSignBlob()
    monkeypatch.setattr(
        requests.adapters.HTTPAdapter, "send", lambda adapter, request, **kw: fake.send(adapter, request, **kw)
    )
    return fake


def test_signed_url_through_iam_sign_blob(gcs_emulator: str, bucket: str, sign_blob: FakeSignBlob) -> None:
    credentials = FakeRuntimeCredentials()
    blobs = store(gcs_emulator, bucket, default_credentials=lambda: credentials)
    blobs.put("runs/r3/report.pdf", b"%PDF iam", "application/pdf")

    first = blobs.signed_url("runs/r3/report.pdf", timedelta(minutes=10), filename="report.pdf")
    second = blobs.signed_url("runs/r3/report.pdf", timedelta(minutes=10))

    verify_v4(first, RUNTIME_EMAIL)
    verify_v4(second, RUNTIME_EMAIL)
    assert credentials.refreshes == 1  # the token is reused while valid
    assert len(sign_blob.calls) == 2
    call = sign_blob.calls[0]
    assert call.method == "POST"
    assert unquote(urlsplit(call.url or "").path) == f"/v1/projects/-/serviceAccounts/{RUNTIME_EMAIL}:signBlob"
    assert call.headers["Authorization"] == "Bearer ya29.fake-1"
    with urllib.request.urlopen(first, timeout=10) as response:
        assert response.read() == b"%PDF iam"


def test_signer_email_setting_wins_over_the_runtime_account(
    gcs_emulator: str, bucket: str, sign_blob: FakeSignBlob
) -> None:
    blobs = store(gcs_emulator, bucket, signer_email=KEY_EMAIL, default_credentials=FakeRuntimeCredentials)
    verify_v4(blobs.signed_url("x.pdf", timedelta(minutes=1)), KEY_EMAIL)
    assert KEY_EMAIL in unquote(sign_blob.calls[0].url or "")


def test_sign_blob_refusal_is_a_blob_store_error(gcs_emulator: str, bucket: str, sign_blob: FakeSignBlob) -> None:
    sign_blob.status = 403
    blobs = store(gcs_emulator, bucket, default_credentials=FakeRuntimeCredentials)
    with pytest.raises(BlobStoreError, match="signBytes"):
        blobs.signed_url("x.pdf", timedelta(minutes=1))
