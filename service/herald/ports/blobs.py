"""Rendered reports are stored once and fetched through short-lived signed URLs."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None: ...
    def get(self, key: str) -> tuple[bytes, str]:
        """(data, content type); raises KeyError when missing."""
        ...

    def exists(self, key: str) -> bool: ...
    def signed_url(self, key: str, expires_in: timedelta, filename: str | None = None) -> str: ...
