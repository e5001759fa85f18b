"""One SQLite database shared by the embedded store and queue: a connection per thread,
one writer at a time, and transactions that nest.

The store and the queue live in this one file so that a state change and the task it
implies commit together (ARCHITECTURE.md decision 9): ``with db.write():`` around a
store write and an enqueue makes them one transaction; each inner ``write()`` joins it.
"""

from __future__ import annotations

import fcntl
import os
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
MAX_GROUP = 64  # writers one group commit may hold: bounds the first one's wait


_lock_files: dict[str, int] = {}
_lock_files_guard = threading.Lock()


def _lock_file(path: Path) -> int:
    """One descriptor per database file and process. flock excludes open files, not
    processes: two SQLiteFile objects on one file in one process (tests, tools) would
    otherwise exclude each other, and a thread nesting writes through both would wait on
    itself forever. Sharing it, they meet on SQLite's own lock, as before the flock."""
    key = os.path.realpath(f"{path}.lock")
    with _lock_files_guard:
        if key not in _lock_files:
            _lock_files[key] = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        return _lock_files[key]


def storage_error(path: Path, exc: BaseException) -> StorageUnavailable:
    text = str(exc).lower()
    cause = next((said for marker, said in _CAUSES if marker in text), str(exc))
    return StorageUnavailable(f"{path}: {cause} ({exc})", retry_after=RETRY_AFTER_SECONDS)


class SQLiteFile:
    def __init__(self, path: Path, schema: str = "") -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        # Group commit (issue 14): every write runs on one shared connection, each inside its
        # own SAVEPOINT; a writer that finishes while others queue for the lock leaves the
        # transaction open for them and waits, and the last in line commits for all. No
        # write() returns before a COMMIT that holds its changes, so what callers promise
        # ("recorded before the send", "before the task is settled") is unchanged.
        self._writer: sqlite3.Connection | None = None
        self._queued = 0  # threads waiting for the write lock (guarded by _state)
        self._state = threading.Lock()
        self._committed = threading.Condition(self._state)
        self._group = 0  # the open (or last) group transaction
        self._members = 0  # writers in the open group
        self._done = 0  # groups committed or failed up to this one
        self._failures: dict[int, BaseException] = {}
        self._process_lock: int | None = None  # fd of the lock file, opened on the first write
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

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA busy_timeout=30000")
        # A delivery's write dirties a few pages; with the default autocheckpoint (1,000 pages)
        # one commit in ~250 paid for a checkpoint and its fsync. 10,000 pages (~40 MB of WAL)
        # copies a page that many commits change once (bench/end_to_end.py: COMMIT 130 -> 60 us).
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection; inside ``write()``, the shared writer (it sees the open transaction)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.depth = 0
            self._local.after = []
        if self._local.depth and self._writer is not None:
            return self._writer
        return conn

    def in_write(self) -> bool:
        """Is this thread inside ``write()`` (a transaction it holds the lock for)?"""
        return bool(getattr(self._local, "depth", 0))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction commits (at once outside one)."""
        if getattr(self._local, "depth", 0):
            self._local.after.append(callback)
        else:
            callback()

    @contextmanager
    def write(self, one_statement: bool = False) -> Iterator[sqlite3.Connection]:
        """An atomic read-check-write; nested calls join the outermost transaction.

        SQLite allows one writer; queueing threads on a lock beats its busy handler,
        which sleeps in growing steps. Other processes still meet busy_timeout.
        ``one_statement``: the body runs one statement and nothing after it can fail. SQLite
        undoes a failed statement by itself, so it needs no savepoint of its own in the
        group: two calls fewer while every other writer waits (compare-and-set updates)."""
        savepoint = not one_statement
        self.conn()
        if self._local.depth:
            assert self._writer is not None
            self._local.depth += 1
            try:
                yield self._writer
            finally:
                self._local.depth -= 1
            return
        with self._state:
            self._queued += 1
        self._write_lock.acquire()
        with self._state:
            self._queued -= 1
        try:
            writer, group = self._join(savepoint)
        except BaseException:
            if self._writer is not None and self._writer.in_transaction:
                self._commit(self._writer, self._group)  # others wait on the open group: commit it
            else:
                self._write_lock.release()
            raise
        self._local.depth = 1
        failed: BaseException | None = None
        try:
            yield writer
            if savepoint:
                writer.execute("RELEASE herald_write")
        except BaseException as exc:
            failed = exc
            self._local.after.clear()
            try:
                if savepoint and writer.in_transaction:
                    writer.execute("ROLLBACK TO herald_write")
                    writer.execute("RELEASE herald_write")
            except sqlite3.Error:
                pass
            if not writer.in_transaction:  # SQLite rolled back the whole group (e.g. a full disk)
                with self._state:
                    self._failures[group] = exc
        finally:
            self._local.depth = 0
        with self._state:
            hand_over = self._queued > 0 and self._members < MAX_GROUP and writer.in_transaction
        if hand_over:
            self._write_lock.release()  # the next writer joins this transaction; the last one commits
        else:
            self._commit(writer, group)
        if failed is not None:
            if isinstance(failed, sqlite3.OperationalError):
                raise storage_error(self.path, failed) from None
            raise failed
        with self._state:
            while self._done < group:
                self._committed.wait()
            error = self._failures.get(group)
        if error is not None:
            raise storage_error(self.path, error) from None
        callbacks, self._local.after = self._local.after, []
        for callback in callbacks:
            callback()

    def _join(self, savepoint: bool = True) -> tuple[sqlite3.Connection, int]:
        """Under the write lock: begin a group transaction or join the open one."""
        if self._writer is None:
            try:
                self._writer = self._connect()
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc) from None
        writer = self._writer
        try:
            if not writer.in_transaction:
                self._lock_processes()
                try:
                    writer.execute("BEGIN IMMEDIATE")
                except BaseException:
                    self._unlock_processes()
                    raise
                with self._state:
                    self._group += 1
                    self._members = 0
            if savepoint:
                writer.execute("SAVEPOINT herald_write")
        except (OSError, sqlite3.Error) as exc:
            if writer.in_transaction and not self._members:
                writer.execute("ROLLBACK")
                self._unlock_processes()
            raise storage_error(self.path, exc) from None
        with self._state:
            self._members += 1
            return writer, self._group

    def _commit(self, writer: sqlite3.Connection, group: int) -> None:
        """Under the write lock: commit the group (every member's changes) and wake its members."""
        error: BaseException | None = None
        try:
            if writer.in_transaction:
                writer.execute("COMMIT")
        except sqlite3.Error as exc:
            error = exc
            try:
                if writer.in_transaction:
                    writer.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        finally:
            self._unlock_processes()
            with self._state:
                if error is not None:
                    self._failures[group] = error
                    self._failures.pop(group - 1000, None)
                self._done = group
                self._committed.notify_all()
            self._write_lock.release()

    # Other Herald processes on this file (`herald serve`'s worker processes, `herald apply`)
    # queue on an flock of a lock file beside it, held from BEGIN to COMMIT: the kernel
    # wakes the next writer at once, where SQLite's busy handler sleeps 1-100 ms between
    # tries. The lock dies with its process, so a kill -9 never leaves it held.
    def _lock_processes(self) -> None:
        if self._process_lock is None:
            self._process_lock = _lock_file(self.path)
        fcntl.flock(self._process_lock, fcntl.LOCK_EX)

    def _unlock_processes(self) -> None:
        if self._process_lock is not None:
            fcntl.flock(self._process_lock, fcntl.LOCK_UN)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
