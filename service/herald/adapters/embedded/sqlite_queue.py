"""A durable task queue on SQLite, dispatched to Herald's own task handlers.

It behaves like Cloud Tasks where Herald relies on it: named tasks are created once
(a name that exists or existed is a no-op), ``eta`` is honoured, a task is acknowledged
only by a 2xx answer, ``503``/``429`` with ``Retry-After`` means "again later", other
5xx and crashes are retried with capped exponential backoff (the crash safety net),
and other 4xx drop the task as unprocessable. Tasks survive a process crash: a leased
task whose worker died is leased again when its lease ends or the queue restarts. The
lease is short (a minute): every handler claims its subject itself (a run step, a
delivery, a notification), so a task dispatched twice does its work once, and work left
by a failed settle (a full disk) resumes within a minute.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from herald.adapters.embedded.sqlite_db import SQLiteFile
from herald.adapters.embedded.sqlite_store import ts
from herald.domain.errors import StorageUnavailable
from herald.ports.clock import Clock
from herald.ports.queue import Task

log = logging.getLogger(__name__)
STORAGE_PAUSE_SECONDS = 5.0  # a worker that met a full disk looks again this soon (work resumes within a minute)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, payload TEXT NOT NULL, eta TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0, lease_until TEXT,
    finished_at TEXT, last_status INTEGER);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (state, eta);
"""


@dataclass(frozen=True)
class DispatchResult:
    status: int
    retry_after: float | None = None


Dispatcher = Callable[[Task], DispatchResult]


class SQLiteQueue:
    def __init__(
        self,
        db: Path | SQLiteFile,
        clock: Clock,
        *,
        lease: timedelta = timedelta(seconds=60),
        max_attempts: int = 25,
        max_backoff: timedelta = timedelta(minutes=5),
    ) -> None:
        # A path, or the SQLiteFile the store shares: then a state change and its task commit together.
        self._db = db if isinstance(db, SQLiteFile) else SQLiteFile(Path(db))
        self._db.ensure(SCHEMA)
        self.path = self._db.path
        self.clock = clock
        self.lease = lease
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self._wakeup = threading.Condition()

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.write()

    # Producer side ----------------------------------------------------------------------
    def enqueue(self, task: Task) -> bool:
        return self.enqueue_many([task]) == 1

    def enqueue_many(self, tasks: Sequence[Task]) -> int:
        now = self.clock.now()
        rows = [(t.name, t.path, json.dumps(t.payload), ts(t.eta or now)) for t in tasks]
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO tasks (name, path, payload, eta) VALUES (?, ?, ?, ?)", rows)
            created = conn.total_changes - before
        if created < len(rows):
            log.info("tasks already queued", extra={"duplicates": len(rows) - created})
        self._db.after_commit(self._notify)  # inside a larger transaction: once it is visible
        return created

    def _notify(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    # Consumer side ----------------------------------------------------------------------
    def lease_next(self) -> tuple[Task, int] | None:
        """Lease the oldest due task; returns it with its attempt number (1-based)."""
        now = self.clock.now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT name, path, payload, attempts FROM tasks WHERE state='queued' AND eta<=? "
                "AND (lease_until IS NULL OR lease_until<=?) ORDER BY eta LIMIT 1",
                (ts(now), ts(now)),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE tasks SET attempts=attempts+1, lease_until=? WHERE name=?",
                (ts(now + self.lease), row[0]),
            )
        return Task(name=row[0], path=row[1], payload=json.loads(row[2])), row[3] + 1

    def settle(self, task: Task, attempt: int, result: DispatchResult) -> None:
        """Record a dispatch outcome (Cloud Tasks' semantics, see the module docstring)."""
        now = self.clock.now()
        if 200 <= result.status < 300:
            self._finish(task.name, "done", result.status)
        elif result.status in (429, 503) and result.retry_after is not None:
            self._retry(task.name, now + timedelta(seconds=result.retry_after), result.status, count=False)
        elif 400 <= result.status < 500:
            log.error("task rejected, dropped", extra={"task": task.name, "path": task.path, "status": result.status})
            self._finish(task.name, "rejected", result.status)
        elif attempt >= self.max_attempts:
            log.error("task failed too often, dropped", extra={"task": task.name, "attempts": attempt})
            self._finish(task.name, "dead", result.status)
        else:
            backoff = min(timedelta(seconds=2**attempt), self.max_backoff)
            self._retry(task.name, now + backoff, result.status, count=True)

    def _finish(self, name: str, state: str, status: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE tasks SET state=?, finished_at=?, lease_until=NULL, last_status=? WHERE name=?",
                (state, ts(self.clock.now()), status, name),
            )

    def _retry(self, name: str, eta: datetime, status: int, *, count: bool) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE tasks SET eta=?, lease_until=NULL, last_status=?, attempts=attempts-? WHERE name=?",
                (ts(eta), status, 0 if count else 1, name),
            )

    def dispatch_one(self, dispatch: Dispatcher) -> bool:
        """Lease, dispatch and settle one due task; False when none was due."""
        leased = self.lease_next()
        if leased is None:
            return False
        task, attempt = leased
        try:
            result = dispatch(task)
        except Exception:
            log.exception("task handler crashed", extra={"task": task.name, "path": task.path})
            result = DispatchResult(status=500)
        self.settle(task, attempt, result)
        return True

    def drain(self, dispatch: Dispatcher, limit: int = 1_000_000) -> int:
        """Dispatch due tasks until none is due (tests and `herald run --wait`)."""
        done = 0
        while done < limit and self.dispatch_one(dispatch):
            done += 1
        return done

    def release_leases(self) -> int:
        """At start-up the previous process is gone: its leased tasks are due again now."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE tasks SET lease_until=NULL WHERE state='queued' AND lease_until IS NOT NULL"
            ).rowcount

    def seconds_until_next(self) -> float | None:
        row = (
            self._conn()
            .execute("SELECT MIN(COALESCE(MAX(eta, lease_until), eta)) FROM tasks WHERE state='queued'")
            .fetchone()
        )
        if row is None or row[0] is None:
            return None
        due = datetime.strptime(row[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=self.clock.now().tzinfo)
        return max(0.0, (due - self.clock.now()).total_seconds())

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        return {state: n for state, n in rows}

    def prune(self, older_than: datetime) -> int:
        """Forget finished tasks (and so their names) after the retention period."""
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM tasks WHERE state != 'queued' AND finished_at < ?", (ts(older_than),)
            ).rowcount

    # Worker threads -------------------------------------------------------------------
    def wait_for_work(self, stop: threading.Event, max_wait: float = 1.0) -> None:
        """Block until a task may be due, new work arrives, or ``stop`` is set."""
        delay = self.seconds_until_next()
        timeout = max_wait if delay is None else min(delay, max_wait)
        if timeout <= 0 or stop.is_set():
            return
        with self._wakeup:
            self._wakeup.wait(timeout)


class QueueWorkers:
    """Worker threads that dispatch due tasks until stopped (embedded backend only)."""

    def __init__(self, queue: SQLiteQueue, dispatch: Dispatcher, threads: int) -> None:
        self.queue = queue
        self.dispatch = dispatch
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, name=f"herald-worker-{i}", daemon=True) for i in range(threads)
        ]

    def start(self) -> None:
        released = self.queue.release_leases()
        if released:
            log.info("resumed tasks left leased by the previous process", extra={"tasks": released})
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not self.queue.dispatch_one(self.dispatch):
                    self.queue.wait_for_work(self.stop_event)
            except StorageUnavailable as exc:  # e.g. a full disk: say so, look again soon, no traceback
                log.error("queue worker paused: storage unavailable", extra={"error": exc.message})
                self.stop_event.wait(STORAGE_PAUSE_SECONDS)
            except Exception:  # keep the worker alive; the task stays leased and comes back
                log.exception("queue worker error")
                self.stop_event.wait(1.0)

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        with self.queue._wakeup:
            self.queue._wakeup.notify_all()
        for thread in self.threads:
            thread.join(timeout)
