"""Worker pools, batched leases and group commit on the real SQLite queue (issue 12 item 3, issue 14)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import pytest

from herald.adapters.embedded.sqlite_db import SQLiteFile
from herald.adapters.embedded.sqlite_queue import DispatchResult, Pool, QueueWorkers, SQLiteQueue
from herald.ports.clock import SystemClock
from herald.ports.queue import Task
from herald.services.tasks import EXECUTE_RUN, FINISH_RUN, SEND_DELIVERY, SEND_NOTIFICATION
from herald.settings import Settings
from herald.web.dispatch import MAIN_POOL, RENDER_POOL, worker_pools

WAIT = 30.0  # seconds: a bound on every wait, never a sleep


@pytest.fixture
def queue(tmp_path):
    return SQLiteQueue(tmp_path / "herald.db", SystemClock())


def test_a_hung_render_does_not_stop_sends_finish_steps_or_notifications(queue):
    hung = threading.Event()
    release = threading.Event()
    done: list[str] = []
    lock = threading.Lock()
    all_done = threading.Event()
    second_render = threading.Event()
    others = [Task(f"send-{i}", SEND_DELIVERY, {"delivery_id": f"d{i}"}) for i in range(50)]
    others += [Task("finish-1", FINISH_RUN, {"run_id": "r1"}), Task("notify-1", SEND_NOTIFICATION, {})]

    def dispatch(task: Task) -> DispatchResult:
        if task.path == EXECUTE_RUN:
            hung.set()
            assert release.wait(WAIT)  # a source that hangs until the test lets it go
        with lock:
            done.append(task.name)
            if len([n for n in done if not n.startswith("render")]) == len(others):
                all_done.set()
            if task.name == "render-2":
                second_render.set()
        return DispatchResult(200)

    pools = worker_pools(queue, dispatch, Settings(render_threads=1, worker_threads=4))
    for pool in pools:
        pool.start()
    try:
        queue.enqueue_many([Task("render-1", EXECUTE_RUN, {"run_id": "r1"}), Task("render-2", EXECUTE_RUN, {})])
        assert hung.wait(WAIT)
        queue.enqueue_many(others)
        assert all_done.wait(WAIT), "sends waited for the hung render"
        assert "render-2" not in done  # the render pool is bounded: the second render waits its turn
        release.set()
        assert second_render.wait(WAIT)
    finally:
        release.set()
        for pool in pools:
            pool.stop()
    assert sorted(done) == sorted(["render-1", "render-2", *[t.name for t in others]])
    assert queue.counts() == {"done": len(others) + 2}


def test_pools_take_only_their_own_paths(queue):
    queue.enqueue_many([Task("r", EXECUTE_RUN), Task("s", SEND_DELIVERY), Task("f", FINISH_RUN)])
    assert [t.name for t, _ in queue.lease_batch(10, RENDER_POOL)] == ["r"]
    assert sorted(t.name for t, _ in queue.lease_batch(10, MAIN_POOL)) == ["f", "s"]
    assert queue.seconds_until_next(RENDER_POOL) is not None


def test_outcomes_are_settled_with_the_next_lease_and_at_stop(queue):
    queue.enqueue_many([Task(f"t{i}", SEND_DELIVERY) for i in range(40)])
    seen: list[str] = []
    finished = threading.Event()
    lock = threading.Lock()

    def dispatch(task: Task) -> DispatchResult:
        with lock:
            seen.append(task.name)
            if len(seen) == 40:
                finished.set()
        return DispatchResult(503, retry_after=60) if task.name == "t0" else DispatchResult(200)

    workers = QueueWorkers(queue, dispatch, threads=4, pool=MAIN_POOL)
    workers.start()
    assert finished.wait(WAIT)
    workers.stop()
    assert sorted(seen) == sorted(f"t{i}" for i in range(40))  # each once
    assert queue.counts() == {"done": 39, "queued": 1}  # t0 postponed by its Retry-After
    assert queue.seconds_until_next() == pytest.approx(60, abs=5)


def test_a_task_run_twice_in_one_batch_is_settled_by_its_last_outcome(queue):
    # Its lease ran out mid-run and the pool ran it again: both outcomes reach one settle.
    queue.enqueue(Task("t", SEND_DELIVERY))
    ((task, attempt),) = queue.lease_batch(1, MAIN_POOL)
    queue.lease_batch(0, MAIN_POOL, [(task, attempt, DispatchResult(404)), (task, attempt + 1, DispatchResult(200))])
    assert queue.counts() == {"done": 1}


def test_a_crash_before_the_settle_brings_the_task_back(tmp_path):
    """A pending settle lost with the process: the task is leased again after a restart;
    its handler's claim (not the queue) is what makes the second dispatch do nothing."""
    path = tmp_path / "herald.db"
    first = SQLiteQueue(path, SystemClock())
    first.enqueue(Task("t", SEND_DELIVERY))
    assert first.lease_batch(5) != []  # ran, outcome pending in memory, then kill -9
    second = SQLiteQueue(path, SystemClock())
    assert second.release_leases(MAIN_POOL) == 1
    assert [t.name for t, _ in second.lease_batch(5)] == ["t"]


def _writers_at_once(count: int, writer: Callable[[int], None]) -> None:
    """``writer(n)`` in ``count`` threads released together; anything one raises fails the test."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        barrier.wait(WAIT)
        try:
            writer(n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not errors


def _committed(db: SQLiteFile, key: int) -> bool:
    """Seen from another connection: a write that returned is committed."""
    return sqlite3.connect(db.path).execute("SELECT 1 FROM t WHERE k=?", (key,)).fetchone() is not None


def test_group_commit_loses_nothing_and_isolates_a_failing_writer(tmp_path):
    db = SQLiteFile(tmp_path / "g.db", "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY);")

    def writer(n: int) -> None:
        for i in range(50):
            key = n * 1000 + i
            try:
                with db.write() as conn:
                    conn.execute("INSERT INTO t (k) VALUES (?)", (key,))
                    if key % 7 == 0:
                        raise ValueError("this writer's change is refused")
            except ValueError:
                continue
            assert _committed(db, key)

    _writers_at_once(8, writer)
    keys = {row[0] for row in sqlite3.connect(db.path).execute("SELECT k FROM t")}
    assert keys == {n * 1000 + i for n in range(8) for i in range(50) if (n * 1000 + i) % 7}


def test_group_commit_one_statement_writers_need_no_savepoint_to_fail_alone(tmp_path):
    # write(one_statement=True) joins a group without a savepoint of its own (issue 14): a statement
    # that fails (a duplicate key) is undone by SQLite alone, and the group's others commit.
    db = SQLiteFile(tmp_path / "g.db", "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY);")
    refused: list[int] = []

    def writer(n: int) -> None:
        for i in range(50):
            key = (n % 4) * 1000 + i  # writers n and n+4 insert the same keys: one of each pair fails
            try:
                with db.write(one_statement=True) as conn:
                    conn.execute("INSERT INTO t (k) VALUES (?)", (key,))
            except sqlite3.IntegrityError:
                refused.append(key)
                continue
            assert _committed(db, key)

    _writers_at_once(8, writer)
    keys = {row[0] for row in sqlite3.connect(db.path).execute("SELECT k FROM t")}
    assert keys == {n * 1000 + i for n in range(4) for i in range(50)}
    assert sorted(refused) == sorted(keys)  # each key refused exactly once, to its second writer


def test_pools_follow_the_settings():
    sq_settings = Settings(render_threads=2, worker_threads=6)
    pools = worker_pools(None, lambda t: DispatchResult(200), sq_settings)  # type: ignore[arg-type]
    assert [(p.pool, len(p.threads)) for p in pools] == [(RENDER_POOL, 2), (MAIN_POOL, 6)]
    assert worker_pools(None, lambda t: DispatchResult(200), Settings(worker_threads=0)) == []  # type: ignore[arg-type]
    assert Pool(paths=(EXECUTE_RUN,)).sql()[1] == (EXECUTE_RUN,)
