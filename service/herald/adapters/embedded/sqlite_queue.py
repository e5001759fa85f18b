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
from collections import deque
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
Settled = tuple[Task, int, DispatchResult]  # a task run, its attempt number, its outcome


@dataclass(frozen=True)
class Pool:
    """Which tasks a worker pool takes, by route: ``paths`` only, or all but ``exclude``.

    Rendering has its own bounded pool (issue 12 item 3, issue 14), so a source that hangs
    holds at most that pool's threads and never delays another report's sends or steps."""

    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def sql(self) -> tuple[str, tuple[str, ...]]:
        if self.paths:
            return f" AND path IN ({','.join('?' * len(self.paths))})", self.paths
        if self.exclude:
            return f" AND path NOT IN ({','.join('?' * len(self.exclude))})", self.exclude
        return "", ()


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
    def lease_next(self, pool: Pool | None = None) -> tuple[Task, int] | None:
        """Lease the oldest due task; returns it with its attempt number (1-based)."""
        leased = self.lease_batch(1, pool)
        return leased[0] if leased else None

    def lease_batch(
        self, limit: int, pool: Pool | None = None, settled: Sequence[Settled] = ()
    ) -> list[tuple[Task, int]]:
        """Settle ``settled`` outcomes and lease up to ``limit`` due tasks of ``pool``: one transaction.

        Group commit (issue 14): a worker pool records the outcomes of the tasks it ran with
        its next lease instead of one transaction each. A handler always records its own
        subject's outcome (a delivery sent, a run step done) before it returns, so a crash
        that loses a pending settle only makes a task come back, and its handler's claim
        sees the work done: nothing is done twice."""
        now = self.clock.now()
        where, args = (pool or Pool()).sql()
        with self._write() as conn:
            # A task run twice (its lease ran out) may be here twice: its last outcome counts.
            latest = list({task.name: (task, attempt, result) for task, attempt, result in settled}.values())
            done = [(task.name, result.status) for task, _, result in latest if 200 <= result.status < 300]
            self._finish_many("done", done)  # the usual outcome: one statement for the batch
            for task, attempt, result in latest:
                if not 200 <= result.status < 300:
                    self.settle(task, attempt, result)  # joins this transaction
            if limit <= 0:
                return []
            rows = conn.execute(
                "SELECT name, path, payload, attempts FROM tasks WHERE state='queued' AND eta<=? "  # noqa: S608
                f"AND (lease_until IS NULL OR lease_until<=?){where} ORDER BY eta LIMIT ?",
                (ts(now), ts(now), *args, limit),
            ).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE tasks SET attempts=attempts+1, lease_until=? WHERE name=?",
                    [(ts(now + self.lease), row[0]) for row in rows],
                )
        return [(Task(name=row[0], path=row[1], payload=json.loads(row[2])), row[3] + 1) for row in rows]

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
        self._finish_many(state, [(name, status)])

    def _finish_many(self, state: str, tasks: Sequence[tuple[str, int]]) -> None:
        """Mark tasks (name, last HTTP status) final in ``state``."""
        if not tasks:
            return
        finished_at = ts(self.clock.now())
        with self._write() as conn:
            conn.executemany(
                "UPDATE tasks SET state=?, finished_at=?, lease_until=NULL, last_status=? WHERE name=?",
                [(state, finished_at, status, name) for name, status in tasks],
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

    def release_leases(self, pool: Pool | None = None) -> int:
        """At start-up the previous process is gone: its leased tasks (of ``pool``) are due again now."""
        where, args = (pool or Pool()).sql()
        with self._write() as conn:
            return conn.execute(
                f"UPDATE tasks SET lease_until=NULL WHERE state='queued' AND lease_until IS NOT NULL{where}",  # noqa: S608
                args,
            ).rowcount

    def release(self, names: Sequence[str]) -> None:
        """Give back leased tasks that were never dispatched (a pool stopping)."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE tasks SET lease_until=NULL, attempts=attempts-1 WHERE name=? AND state='queued'",
                [(name,) for name in names],
            )

    def seconds_until_next(self, pool: Pool | None = None) -> float | None:
        where, args = (pool or Pool()).sql()
        row = (
            self._conn()
            .execute(
                f"SELECT MIN(COALESCE(MAX(eta, lease_until), eta)) FROM tasks WHERE state='queued'{where}",  # noqa: S608
                args,
            )
            .fetchone()
        )
        if row is None or row[0] is None:
            return None
        due = datetime.fromisoformat(row[0].removesuffix("Z")).replace(tzinfo=self.clock.now().tzinfo)
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
    def wait_for_work(self, stop: threading.Event, max_wait: float = 1.0, pool: Pool | None = None) -> None:
        """Block until a task of ``pool`` may be due, new work arrives, or ``stop`` is set."""
        delay = self.seconds_until_next(pool)
        timeout = max_wait if delay is None else min(delay, max_wait)
        if timeout <= 0 or stop.is_set():
            return
        with self._wakeup:
            self._wakeup.wait(timeout)


class QueueWorkers:
    """Worker threads that dispatch due tasks of one pool until stopped (embedded backend only).

    Each pool leases in batches of up to its thread count and settles what it ran in the
    same transaction as its next lease (``SQLiteQueue.lease_batch``): per task, the queue
    costs a fraction of one write instead of two. Leased tasks wait in memory for a free
    thread of the pool; pending outcomes are written when the pool goes idle or stops."""

    def __init__(
        self,
        queue: SQLiteQueue,
        dispatch: Dispatcher,
        threads: int,
        pool: Pool | None = None,
        name: str = "worker",
        *,
        poll_seconds: float = 1.0,
        resume_leases: bool = True,
    ) -> None:
        self.queue = queue
        self.dispatch = dispatch
        self.pool = pool or Pool()
        # A pool in a second process is not woken by this process's enqueues: it polls.
        self.poll_seconds = poll_seconds
        # Only the first process of a data folder may take back leases at start: the
        # previous process is gone then. A send process starts beside a live one.
        self.resume_leases = resume_leases
        self.batch = max(1, threads)
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._leased: deque[tuple[Task, int]] = deque()
        self._settled: list[Settled] = []
        self.threads = [
            threading.Thread(target=self._loop, name=f"herald-{name}-{i}", daemon=True) for i in range(threads)
        ]

    def start(self) -> None:
        released = self.queue.release_leases(self.pool) if self.resume_leases else 0
        if released:
            log.info("resumed tasks left leased by the previous process", extra={"tasks": released})
        for thread in self.threads:
            thread.start()

    def _next(self) -> tuple[Task, int] | None:
        with self._lock:
            if self._leased:
                return self._leased.popleft()
            settled, self._settled = self._settled, []
        try:
            leased = self.queue.lease_batch(self.batch, self.pool, settled)
        except BaseException:
            with self._lock:  # not written: try again with the next lease
                self._settled[:0] = settled
            raise
        if not leased:
            return None
        with self._lock:
            self._leased.extend(leased[1:])
        return leased[0]

    def _run(self, task: Task, attempt: int) -> None:
        try:
            result = self.dispatch(task)
        except Exception:
            log.exception("task handler crashed", extra={"task": task.name, "path": task.path})
            result = DispatchResult(status=500)
        with self._lock:
            self._settled.append((task, attempt, result))

    def flush(self) -> None:
        """Write the outcomes ran but not yet settled (idle, stopping)."""
        with self._lock:
            settled, self._settled = self._settled, []
        if settled:
            try:
                self.queue.lease_batch(0, self.pool, settled)
            except BaseException:
                with self._lock:
                    self._settled[:0] = settled
                raise

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                leased = self._next()
                if leased is None:
                    self.flush()
                    self.queue.wait_for_work(self.stop_event, self.poll_seconds, self.pool)
                else:
                    self._run(*leased)
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
        try:
            self.flush()
        except StorageUnavailable as exc:  # the tasks come back on the next start; their handlers see them done
            log.error("could not record finished tasks at stop", extra={"error": exc.message})
        with self._lock:  # leased and never started: due again at once on the next start
            left = [task.name for task, _ in self._leased]
            self._leased.clear()
        if left:
            try:
                self.queue.release(left)
            except StorageUnavailable as exc:  # their leases run out; they come back then
                log.error("could not release leased tasks at stop", extra={"error": exc.message})
