"""Rendered reports on a local directory, fetched through HMAC-signed expiring links.

The links point at Herald's own ``/blobs/<key>`` route, which checks the signature
and expiry before serving the file: the embedded twin of a GCS V4 signed URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from herald.ports.clock import Clock

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,250}$")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LocalBlobStore:
    def __init__(self, root: Path, secret: bytes, public_url: str, clock: Clock) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.clock = clock

    def _path(self, key: str) -> Path:
        if not _SAFE_KEY.match(key) or ".." in key.split("/"):
            raise KeyError(key)
        return self.root / key

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"content_type": content_type, "metadata": metadata or {}}
        # Meta first, then the file, each through a temporary name of its own: concurrent
        # writers of the same key never share a temporary file, a reader never sees half a
        # report, and a report is never visible without its meta.
        _write_atomic(path.with_name(path.name + ".meta.json"), json.dumps(meta).encode())
        _write_atomic(path, data)

    def get(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        meta = json.loads(path.with_name(path.name + ".meta.json").read_text())
        return path.read_bytes(), str(meta["content_type"])

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except KeyError:
            return False

    def _signature(self, key: str, expires: int, filename: str) -> str:
        message = f"{key}\n{expires}\n{filename}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def signed_url(self, key: str, expires_in: timedelta, filename: str | None = None) -> str:
        expires = int((self.clock.now() + expires_in).timestamp())
        name = filename or key.rsplit("/", 1)[-1]
        query = urlencode({"expires": expires, "filename": name, "sig": self._signature(key, expires, name)})
        return f"{self.public_url}/blobs/{quote(key)}?{query}"

    def verify(self, key: str, expires: str, filename: str, signature: str) -> bool:
        """True when the link is authentic and not expired (used by the /blobs route)."""
        if not expires.isdigit():
            return False
        expected = self._signature(key, int(expires), filename)
        if not hmac.compare_digest(expected, signature):
            return False
        return int(expires) >= int(self.clock.now().timestamp())
