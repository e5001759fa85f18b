"""Run a container's recorded tasks through the services, the way the queue would."""

from __future__ import annotations

from herald.bootstrap import Container
from herald.services import delivery, runs
from herald.services.tasks import EXECUTE_RUN, FINISH_RUN, SEND_DELIVERY
from tests.fakes import RecordingQueue


def drain(c: Container, max_rounds: int = 100) -> int:
    """Process every task due now (and what those tasks enqueue that is due now)."""
    queue = c.queue
    assert isinstance(queue, RecordingQueue)
    done = 0
    for _ in range(max_rounds):
        due = queue.take_due(c.clock.now())
        if not due:
            return done
        for task in due:
            if task.path == EXECUTE_RUN:
                runs.execute_run(c, task.payload["run_id"])
            elif task.path == FINISH_RUN:
                runs.finish_run(c, task.payload["run_id"])
            elif task.path == SEND_DELIVERY:
                delivery.send_delivery(c, task.payload["delivery_id"])
            else:
                raise AssertionError(f"unexpected task {task.path}")
            done += 1
    raise AssertionError("tasks keep coming: a loop?")
