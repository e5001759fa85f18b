"""The blob-store contract on the embedded store (GCS is checked against fake-gcs-server)."""

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest

from herald.adapters.embedded.local_blobs import LocalBlobStore
from herald.ports.clock import FakeClock
from tests.factories import T0


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def blobs(tmp_path, clock):
    return LocalBlobStore(tmp_path / "blobs", b"k" * 32, "http://127.0.0.1:8080", clock)


def test_put_get_exists(blobs):
    blobs.put("reports/r1/run1/report.pdf", b"%PDF-1.4", "application/pdf", {"run_id": "run1"})
    assert blobs.exists("reports/r1/run1/report.pdf")
    assert blobs.get("reports/r1/run1/report.pdf") == (b"%PDF-1.4", "application/pdf")
    assert not blobs.exists("reports/r1/run1/other.pdf")
    with pytest.raises(KeyError):
        blobs.get("reports/missing.pdf")


@pytest.mark.parametrize("key", ["../etc/passwd", "reports/../../x", "/abs", ""])
def test_keys_cannot_escape_the_folder(blobs, key):
    with pytest.raises(KeyError):
        blobs.put(key, b"x", "text/plain")
    assert blobs.exists(key) is False


def _parts(url: str) -> tuple[str, dict[str, str]]:
    parsed = urlparse(url)
    return parsed.path.removeprefix("/blobs/"), {k: v[0] for k, v in parse_qs(parsed.query).items()}


def test_signed_urls_verify_until_they_expire(blobs, clock):
    url = blobs.signed_url("reports/a.pdf", timedelta(minutes=5), "a.pdf")
    key, q = _parts(url)
    assert blobs.verify(key, q["expires"], q["filename"], q["sig"])
    clock.advance(minutes=5, seconds=1)
    assert not blobs.verify(key, q["expires"], q["filename"], q["sig"])


def test_tampered_urls_do_not_verify(blobs):
    key, q = _parts(blobs.signed_url("reports/a.pdf", timedelta(minutes=5)))
    assert not blobs.verify("reports/b.pdf", q["expires"], q["filename"], q["sig"])
    assert not blobs.verify(key, str(int(q["expires"]) + 60), q["filename"], q["sig"])
    assert not blobs.verify(key, q["expires"], "other.pdf", q["sig"])
    assert not blobs.verify(key, "soon", q["filename"], q["sig"])
