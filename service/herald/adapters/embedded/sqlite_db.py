"""One SQLite database shared by the embedded store and queue: a connection per thread,
one writer at a time, and transactions that nest.

The store and the queue live in this one file so that a state change and the task it
implies commit together (ARCHITECTURE.md decision 9): ``with db.write():`` around a
store write and an enqueue makes them one transaction; each inner ``write()`` joins it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from herald.domain.errors import StorageUnavailable

# What SQLite says, and what an operator should read instead.
_CAUSES = (
    ("disk is full", "the disk is full"),
    ("readonly database", "the file or its folder is read-only"),
    ("not a database", "the file is corrupt or not a Herald database"),
    ("malformed", "the file is corrupt"),
    ("unable to open", "the file cannot be opened (missing folder or no permission)"),
    ("disk i/o error", "the disk failed to read or write"),
)
RETRY_AFTER_SECONDS = 30  # what a request that met a full disk is told


def storage_error(path: Path, exc: BaseException) -> StorageUnavailable:
    text = str(exc).lower()
    cause = next((said for marker, said in _CAUSES if marker in text), str(exc))
    return StorageUnavailable(f"{path}: {cause} ({exc})", retry_after=RETRY_AFTER_SECONDS)


class SQLiteFile:
    def __init__(self, path: Path, schema: str = "") -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self.conn()
            checked = conn.execute("PRAGMA quick_check").fetchone()
            if checked is None or checked[0] != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: quick_check said {checked}")
        except (OSError, sqlite3.Error) as exc:
            raise storage_error(self.path, exc) from None
        if schema:
            self.ensure(schema)

    def ensure(self, schema: str) -> None:
        """Create the tables a part of Herald needs (idempotent)."""
        try:
            self.conn().executescript(schema)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from None

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            self._local.depth = 0
            self._local.after = []
        return conn

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction commits (at once outside one)."""
        if getattr(self._local, "depth", 0):
            self._local.after.append(callback)
        else:
            callback()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """An atomic read-check-write; nested calls join the outermost transaction.

        SQLite allows one writer; queueing threads on a lock beats its busy handler,
        which sleeps in growing steps. Other processes still meet busy_timeout."""
        conn = self.conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise storage_error(self.path, exc) from None
            self._local.depth = 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._local.after.clear()
                if isinstance(exc, sqlite3.OperationalError):
                    raise storage_error(self.path, exc) from None
                raise
            finally:
                self._local.depth = 0
        callbacks, self._local.after = self._local.after, []
        for callback in callbacks:
            callback()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
