"""The task-queue contract, against every implementation that dispatches here.

The Cloud Tasks adapter is checked against its emulator in tests/adapters/gcp; the
semantics Herald relies on (names are unique, ETA honoured, 2xx acknowledges, 503 +
Retry-After postpones, crashes are retried) are exercised here on the embedded queue.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from herald.adapters.embedded.sqlite_queue import DispatchResult, QueueWorkers, SQLiteQueue
from herald.ports.clock import FakeClock
from herald.ports.queue import Task
from tests.factories import T0
from tests.fakes import RecordingQueue


@pytest.fixture(params=["recording", "embedded"])
def queue(request, tmp_path):
    if request.param == "recording":
        return RecordingQueue()
    return SQLiteQueue(tmp_path / "queue.db", FakeClock(T0))


def test_a_name_is_created_once(queue):
    assert queue.enqueue(Task("t1", "/tasks/x", {"a": 1})) is True
    assert queue.enqueue(Task("t1", "/tasks/x", {"a": 2})) is False
    assert queue.enqueue_many([Task("t1", "/tasks/x"), Task("t2", "/tasks/x"), Task("t3", "/tasks/x")]) == 2


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def sq(tmp_path, clock):
    return SQLiteQueue(tmp_path / "queue.db", clock)


class Recorder:
    def __init__(self, answers=None):
        self.calls: list[Task] = []
        self.answers = answers or {}

    def __call__(self, task: Task) -> DispatchResult:
        self.calls.append(task)
        answer = self.answers.get(task.name)
        if isinstance(answer, list):
            answer = answer.pop(0) if answer else None
        if isinstance(answer, Exception):
            raise answer
        return answer or DispatchResult(200)


def test_eta_is_honoured(sq, clock):
    sq.enqueue(Task("later", "/tasks/x", eta=T0 + timedelta(minutes=2)))
    rec = Recorder()
    assert sq.drain(rec) == 0
    clock.advance(minutes=2)
    assert sq.drain(rec) == 1 and rec.calls[0].name == "later"


def test_a_finished_task_name_stays_taken(sq):
    sq.enqueue(Task("once", "/tasks/x"))
    sq.drain(Recorder())
    assert sq.enqueue(Task("once", "/tasks/x")) is False
    assert sq.counts() == {"done": 1}


def test_503_with_retry_after_postpones_without_counting(sq, clock):
    sq.enqueue(Task("busy", "/tasks/x"))
    rec = Recorder({"busy": [DispatchResult(503, retry_after=30), DispatchResult(200)]})
    assert sq.drain(rec) == 1
    clock.advance(seconds=29)
    assert sq.drain(rec) == 0
    clock.advance(seconds=1)
    assert sq.drain(rec) == 1
    assert sq.counts() == {"done": 1}


def test_crashes_and_5xx_retry_with_backoff_then_give_up(tmp_path, clock):
    sq = SQLiteQueue(tmp_path / "q.db", clock, max_attempts=3)
    sq.enqueue(Task("flaky", "/tasks/x"))
    rec = Recorder({"flaky": [RuntimeError("boom"), DispatchResult(500), DispatchResult(500)]})
    assert sq.drain(rec) == 1
    clock.advance(seconds=2)  # backoff 2**1
    assert sq.drain(rec) == 1
    clock.advance(seconds=4)  # backoff 2**2
    assert sq.drain(rec) == 1
    assert sq.counts() == {"dead": 1}


def test_4xx_drops_the_task(sq):
    sq.enqueue(Task("bad", "/tasks/x"))
    sq.drain(Recorder({"bad": DispatchResult(400)}))
    assert sq.counts() == {"rejected": 1}


def test_a_leased_task_comes_back_after_a_restart(tmp_path, clock):
    path = tmp_path / "q.db"
    first = SQLiteQueue(path, clock)
    first.enqueue(Task("inflight", "/tasks/x"))
    assert first.lease_next() is not None  # the process dies holding it
    second = SQLiteQueue(path, clock)
    assert second.drain(Recorder()) == 0  # still leased
    assert second.release_leases() == 1  # what QueueWorkers.start() does
    rec = Recorder()
    assert second.drain(rec) == 1 and rec.calls[0].name == "inflight"


def test_worker_threads_dispatch_each_task_exactly_once(tmp_path):
    from herald.ports.clock import SystemClock

    sq = SQLiteQueue(tmp_path / "q.db", SystemClock())
    seen: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def dispatch(task: Task) -> DispatchResult:
        with lock:
            seen.append(task.name)
            if len(seen) == 300:
                done.set()
        return DispatchResult(200)

    workers = QueueWorkers(sq, dispatch, threads=4)
    workers.start()
    sq.enqueue_many([Task(f"t{i}", "/tasks/x") for i in range(300)])
    assert done.wait(30)
    workers.stop()
    assert sorted(seen) == sorted(f"t{i}" for i in range(300))
