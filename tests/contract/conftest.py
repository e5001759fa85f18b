"""The ``store`` fixture: the Store port contract runs once per implementation.

- ``embedded``: the SQLite store on a fresh file.
- ``firestore``: the Firestore store on Google's emulator, a project id of its own per test.

``open_store()`` opens one more store on the same data (another SQLite connection,
another Firestore client), for races between two real connections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from herald.ports.store import Store

STORES = ["embedded", pytest.param("firestore", marks=pytest.mark.emulator)]


@pytest.fixture(params=STORES)
def open_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[], Store]]:
    closers: list[Callable[[], None]] = []
    if request.param == "embedded":
        from herald.adapters.embedded.sqlite_store import SQLiteStore

        def open_embedded() -> Store:
            return SQLiteStore(tmp_path / "herald.db")

        yield open_embedded
        return

    from herald.adapters.gcp.firestore_store import FirestoreStore

    emulator = request.getfixturevalue("firestore_emulator")
    first = request.getfixturevalue("firestore_client")

    def open_firestore() -> Store:
        if not closers:
            closers.append(lambda: None)
            return FirestoreStore(first)
        client = emulator.client(project=first.project)
        closers.append(client.close)
        return FirestoreStore(client)

    yield open_firestore
    for close in closers:
        close()


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()
