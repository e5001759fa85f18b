"""The store alone, for commands that only read or write definitions (`herald apply`).

``bootstrap.build_container`` wires every port, so on gcp it demands the worker URL, the
bucket and the HMAC key; `herald apply` writes only report definitions to Firestore and
must need nothing else (issue 13). This builds the same store adapter the container
would, with nothing around it.
"""

from __future__ import annotations

from herald.domain.errors import StorageUnavailable
from herald.ports.store import Store
from herald.settings import Settings


class StoreConfigError(ValueError):
    """The store cannot be opened with these settings (said in one line, no traceback)."""


def store_exists(settings: Settings) -> bool:
    """Whether there is a store to compare against without creating one.

    Embedded: the SQLite file exists (`herald apply --check` must not create it).
    gcp: always (Firestore is reached on demand)."""
    if settings.backend == "gcp":
        return True
    return (settings.data_dir / "herald.db").exists()


def build_store(settings: Settings) -> Store:
    """SQLite under HERALD_DATA_DIR, or Firestore (HERALD_GCP_PROJECT; its emulator when
    HERALD_FIRESTORE_EMULATOR_HOST or FIRESTORE_EMULATOR_HOST is set)."""
    if settings.backend == "gcp":
        if not settings.gcp_project:
            raise StoreConfigError(
                "HERALD_BACKEND=gcp: `herald apply` needs HERALD_GCP_PROJECT (the Firestore project)"
            )
        from herald.adapters.gcp.firestore_store import FirestoreStore
        from herald.bootstrap_gcp import build_firestore_client

        return FirestoreStore(build_firestore_client(settings))
    from herald.adapters.embedded.sqlite_store import SQLiteStore

    try:
        return SQLiteStore(settings.data_dir / "herald.db")
    except StorageUnavailable as exc:  # corrupt, read-only, full: one readable line
        raise StoreConfigError(f"herald: cannot use the data store: {exc.message}") from None
