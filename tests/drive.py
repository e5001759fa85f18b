"""Run a container's recorded tasks through the services, the way the queue would."""

from __future__ import annotations

from herald.domain.records import Delivery
from herald.ports.container import Container
from herald.services import delivery, notifications, runs
from herald.services.tasks import EXECUTE_RUN, FINISH_RUN, SEND_DELIVERY, SEND_NOTIFICATION
from tests.fakes import RecordingQueue


def drain(c: Container, max_rounds: int = 100, path: str | None = None) -> int:
    """Process every task due now (and what those tasks enqueue that is due now); ``path``
    limits it to one task route (e.g. notifications only: no worker runs the runs)."""
    queue = c.queue
    assert isinstance(queue, RecordingQueue)
    done = 0
    for _ in range(max_rounds):
        due = queue.take_due(c.clock.now(), path)
        if not due:
            return done
        for task in due:
            if task.path == EXECUTE_RUN:
                runs.execute_run(c, task.payload["run_id"])
            elif task.path == FINISH_RUN:
                runs.finish_run(c, task.payload["run_id"], task.payload.get("polls", 0))
            elif task.path == SEND_DELIVERY:
                seed = task.payload.get("seed")
                delivery.send_delivery(c, task.payload["delivery_id"], Delivery.model_validate(seed) if seed else None)
            elif task.path == SEND_NOTIFICATION:
                notifications.send_notification(c, task.payload["alert_id"], task.payload["channel"])
            else:
                raise AssertionError(f"unexpected task {task.path}")
            done += 1
    raise AssertionError("tasks keep coming: a loop?")
