"""The blob store port on Cloud Storage, with V4 signed URLs for downloads.

Signing needs a private key. With a service-account key file configured, the library
signs locally. On Cloud Run there is no key: the runtime's default credentials are
refreshed and the library asks IAM ``signBlob`` to sign for the service account
(``service_account_email`` + ``access_token``), which needs
``roles/iam.serviceAccountTokenCreator`` on that account.
https://cloud.google.com/storage/docs/access-control/signing-urls-with-helpers
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined]
from google.cloud.storage.retry import DEFAULT_RETRY

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

    from herald.settings import Settings

log = logging.getLogger(__name__)

# V4 signed URLs live at most 7 days (the library refuses more).
# https://cloud.google.com/storage/docs/access-control/signed-urls#expiration
MAX_SIGNED_URL_LIFETIME = timedelta(days=7)
_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class BlobStoreError(Exception):
    """A Cloud Storage call or a signing failed; ``permanent`` says whether retrying helps."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def build_client(project: str, emulator_host: str = "") -> storage.Client:
    """A storage client; with an emulator URL (e.g. fake-gcs-server), anonymous."""
    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or "emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": emulator_host},
        )
    return storage.Client(project=project or None)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 one (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _default_credentials() -> Credentials:
    credentials, _ = google.auth.default(scopes=_SCOPES)
    return credentials


class GcsBlobStore:
    def __init__(
        self,
        client: storage.Client,
        bucket: str,
        *,
        signing_key_file: str = "",
        signer_email: str = "",
        default_credentials: Callable[[], Credentials] = _default_credentials,
        timeout: float = 10.0,
    ) -> None:
        if not bucket:
            raise ValueError("a bucket is required")
        self.client = client
        self.bucket = client.bucket(bucket)
        self.signing_key_file = signing_key_file
        self.signer_email = signer_email
        self.timeout = timeout
        self._default_credentials = default_credentials
        self._lock = threading.Lock()
        self._key_credentials: Any = None
        self._runtime_credentials: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, client: storage.Client | None = None) -> GcsBlobStore:
        return cls(
            client if client is not None else build_client(settings.gcp_project, settings.storage_emulator_host),
            settings.gcs_bucket,
            signing_key_file=settings.gcs_signing_key_file,
            signer_email=settings.gcs_signer_email,
            timeout=settings.gcp_call_timeout_seconds,
        )

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        blob = self.bucket.blob(key)
        blob.metadata = dict(metadata or {})
        try:
            # Retrying is safe: a key holds one rendered artifact, rewriting it is idempotent.
            blob.upload_from_string(data, content_type=content_type, timeout=self.timeout, retry=DEFAULT_RETRY)
        except gexc.GoogleAPICallError as exc:
            raise _error(f"uploading gs://{self.bucket.name}/{key}", exc) from exc

    def get(self, key: str) -> tuple[bytes, str]:
        try:
            blob = self.bucket.get_blob(key, timeout=self.timeout, retry=DEFAULT_RETRY)
            if blob is None:
                raise KeyError(key)
            data = blob.download_as_bytes(timeout=self.timeout, retry=DEFAULT_RETRY)
        except gexc.NotFound as exc:  # deleted between the two calls
            raise KeyError(key) from exc
        except gexc.GoogleAPICallError as exc:
            raise _error(f"reading gs://{self.bucket.name}/{key}", exc) from exc
        return data, blob.content_type or "application/octet-stream"

    def exists(self, key: str) -> bool:
        try:
            return bool(self.bucket.blob(key).exists(timeout=self.timeout, retry=DEFAULT_RETRY))
        except gexc.GoogleAPICallError as exc:
            raise _error(f"checking gs://{self.bucket.name}/{key}", exc) from exc

    def signed_url(self, key: str, expires_in: timedelta, filename: str | None = None) -> str:
        if expires_in <= timedelta(0):
            raise ValueError("expires_in must be positive")
        if expires_in > MAX_SIGNED_URL_LIFETIME:
            log.warning("signed URL lifetime %s clamped to the V4 maximum of 7 days", expires_in)
            expires_in = MAX_SIGNED_URL_LIFETIME
        options: dict[str, Any] = {
            "version": "v4",
            "expiration": expires_in,
            "method": "GET",
            "response_disposition": content_disposition(filename or key.rsplit("/", 1)[-1]),
        }
        try:
            if self.signing_key_file:
                options["credentials"] = self._key_file_credentials()
            else:
                credentials = self._fresh_runtime_credentials()
                email = self.signer_email or getattr(credentials, "service_account_email", "")
                if not email or email == "default":
                    raise BlobStoreError("no signer service account e-mail (set gcs_signer_email)", permanent=True)
                options["service_account_email"] = email
                options["access_token"] = credentials.token
            return str(self.bucket.blob(key).generate_signed_url(**options))
        except google.auth.exceptions.TransportError as exc:  # IAM signBlob or token endpoint unreachable
            raise BlobStoreError(f"signing a URL for {key}: {exc}", permanent=False) from exc
        except google.auth.exceptions.GoogleAuthError as exc:  # refused: missing permission, bad key
            raise BlobStoreError(f"signing a URL for {key}: {exc}", permanent=True) from exc

    def _key_file_credentials(self) -> Any:
        with self._lock:
            if self._key_credentials is None:
                from google.oauth2 import service_account

                self._key_credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    self.signing_key_file
                )
            return self._key_credentials

    def _fresh_runtime_credentials(self) -> Any:
        """The runtime's credentials with a valid access token (refreshed when needed)."""
        with self._lock:
            if self._runtime_credentials is None:
                self._runtime_credentials = self._default_credentials()
            credentials = self._runtime_credentials
            if not credentials.valid:
                credentials.refresh(_BoundedRequest(self.timeout))
            return credentials


class _BoundedRequest(google.auth.transport.requests.Request):
    """A google.auth transport whose calls never wait longer than ``timeout``
    (the library's default is 120 s)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def __call__(
        self, url: Any, method: Any = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any
    ) -> Any:
        bounded = min(float(timeout or self._timeout), self._timeout)
        return super().__call__(  # type: ignore[no-untyped-call]
            url, method=method, body=body, headers=headers, timeout=bounded, **kwargs
        )


def _error(action: str, exc: gexc.GoogleAPICallError) -> BlobStoreError:
    transient = isinstance(
        exc, gexc.ServiceUnavailable | gexc.DeadlineExceeded | gexc.TooManyRequests | gexc.InternalServerError
    )
    return BlobStoreError(f"{action}: {exc}", permanent=not transient)
