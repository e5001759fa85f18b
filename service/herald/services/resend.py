"""Resend to the failed recipients of a run: one new attempt for exactly those deliveries.

The model (why the run is not reopened):
- A run's status is the ledger's record of its delivery round; it settled once, and its
  heartbeat, ``run.completed`` event and owner alert went out once. Final run states have
  no outgoing edge (domain/states.py) and the finish task's name is per run, so a reopened
  run would never be settled again. The resend therefore lives on the deliveries:
  FAILED -> QUEUED (an edge of the delivery table), a send task, and an ``attempt_log``
  entry naming who asked. Pages and the API show the run's stored outcome next to the
  live delivery counts (``delivery_counts``), which is where a recovered recipient shows.
- Idempotent: the request id is derived from the run and the exact failures it covers
  (delivery id + attempts), so a double submit, a retried POST or a race of two admins
  claims the same record (``put_inbound_event``) and only the first one sends. Each
  delivery moves with a conditional write, and its task name is derived from its own
  attempt count, so a re-enqueue after a crash is a no-op at the queue.
- A run still delivering with nothing open is settling (its finish task is queued):
  reopening a delivery then could strand the run, so the caller is told to try again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from herald.domain.records import MAX_ATTEMPT_LOG, Delivery
from herald.domain.states import RUN_FINAL, DeliveryStatus, RunStatus
from herald.ports.container import Container
from herald.ports.store import Page, pages
from herald.services.tasks import send_task

log = logging.getLogger(__name__)

KIND = "admin-resend"
RESEND_ATTEMPT_BASE = 1000  # task names of resends never collide with the retry schedule's (attempts 0..N)
PAGE = 1000
ACTOR_MAX = 200  # who asked (an IAP e-mail or a token's name), as kept with the request and each attempt log
MAX_RESEND = 10_000  # failures covered by one request; the rest wait for the next one


class ResendRefused(Exception):
    """The run cannot be resent now; ``status`` is the HTTP answer (404, 409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ResendResult:
    run_id: str
    request_id: str
    actor: str
    requested: list[str] = field(default_factory=list)  # delivery ids moved to queued by this request
    repeated: bool = False  # the same request was made before (by ``actor``): nothing sent again

    def to_doc(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "request_id": self.request_id,
            "actor": self.actor,
            "deliveries": self.requested,
            "count": len(self.requested),
            "repeated": self.repeated,
        }


# Failed, and unknown: a send nothing could confirm is never re-sent on its own, only here.
RESENDABLE = (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN)


def failed_deliveries(c: Container, run_id: str, limit: int = MAX_RESEND) -> list[Delivery]:
    found: list[Delivery] = []

    def listing(status: DeliveryStatus) -> Callable[[str | None], Page]:
        return lambda cursor: c.store.list_deliveries(run_id=run_id, status=status, limit=PAGE, cursor=cursor)

    for status in RESENDABLE:
        for items in pages(listing(status)):
            found += items
            if len(found) >= limit:
                return found[:limit]
    return found[:limit]


def request_id(run_id: str, failures: list[Delivery]) -> str:
    parts = "\x1f".join(sorted(f"{d.id}:{d.attempts}" for d in failures))
    return "rs" + hashlib.sha256(f"{run_id}\x1e{parts}".encode()).hexdigest()[:24]


def resend_failed(c: Container, run_id: str, actor: str) -> ResendResult:
    """Queue one new attempt for each FAILED delivery of ``run_id``; see the module docstring."""
    run = c.store.get_run(run_id)
    if run is None:
        raise ResendRefused(404, "no such run")
    if run.status not in RUN_FINAL and run.status != RunStatus.DELIVERING:
        raise ResendRefused(409, f"the run is {run.status}: it has no failed deliveries yet")
    if run.status == RunStatus.DELIVERING and not c.store.has_open_deliveries(run_id):
        raise ResendRefused(409, "the run is settling; try again in a moment")
    _requeue_stranded(c, run_id)
    failures = failed_deliveries(c, run_id)
    rid = request_id(run_id, failures)
    actor = actor[:ACTOR_MAX]
    result = ResendResult(run_id=run_id, request_id=rid, actor=actor)
    if not failures:
        return result
    now = c.clock.now()
    doc = {"run_id": run_id, "actor": actor, "at": now.isoformat(), "deliveries": [d.id for d in failures]}
    if not c.store.put_inbound_event(KIND, rid, doc, now):
        first = c.store.get_inbound_event(KIND, rid) or {}
        log.info("resend repeated", extra={"run_id": run_id, "request_id": rid, "actor": actor})
        return ResendResult(run_id, rid, str(first.get("actor", actor)), list(first.get("deliveries", [])), True)
    for d in failures:
        entry = {"at": now.isoformat(), "result": "resend", "by": actor, "request": rid}
        queued = c.store.transition_delivery(
            d.id,
            list(RESENDABLE),
            DeliveryStatus.QUEUED,
            next_attempt_at=None,
            lease_until=None,
            updated_at=now,
            attempt_log=[*d.attempt_log, entry][-MAX_ATTEMPT_LOG:],
        )
        if queued is None:  # another request or worker moved it first: theirs to send
            continue
        c.queue.enqueue(resend_task(queued))
        result.requested.append(d.id)
    log.info(
        "resend to failed recipients",
        extra={"run_id": run_id, "request_id": rid, "actor": actor, "deliveries": len(result.requested)},
    )
    return result


def resend_task(d: Delivery) -> Any:
    # attempts is unchanged between the queued write and the claim, so the name is stable.
    return send_task(d.id, RESEND_ATTEMPT_BASE + d.attempts)


def _requeue_stranded(c: Container, run_id: str) -> None:
    """A resend that crashed between its queued write and its enqueue left the delivery queued
    with no task: enqueue it again (the same name, so a task that exists is not doubled)."""
    page = c.store.list_deliveries(run_id=run_id, status=DeliveryStatus.QUEUED, limit=PAGE)
    stranded = [d for d in page.items if d.attempt_log and d.attempt_log[-1].get("result") == "resend"]
    if stranded:
        c.queue.enqueue_many([resend_task(d) for d in stranded])
