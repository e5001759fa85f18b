"""State machines as data: every allowed edge is listed; anything else is refused."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from herald.domain.errors import InvalidTransition


class RunStatus(StrEnum):
    PENDING = "pending"  # created, start task queued
    WAITING = "waiting"  # gated on upstream completion records
    RENDERING = "rendering"
    DELIVERING = "delivering"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # some recipients failed
    FAILED = "failed"
    MISSED = "missed"  # the slot passed without the tick seeing it in time
    SKIPPED = "skipped"  # a dependency policy chose not to run


RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.WAITING, RunStatus.RENDERING, RunStatus.FAILED, RunStatus.SKIPPED}),
    RunStatus.WAITING: frozenset({RunStatus.RENDERING, RunStatus.FAILED, RunStatus.SKIPPED}),
    # rendering -> rendering: a crashed render is picked up again by the redelivered task.
    RunStatus.RENDERING: frozenset({RunStatus.RENDERING, RunStatus.DELIVERING, RunStatus.FAILED}),
    RunStatus.DELIVERING: frozenset({RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.PARTIAL: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.MISSED: frozenset(),
    RunStatus.SKIPPED: frozenset(),
}

RUN_FINAL = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # waiting for its first attempt
    SENDING = "sending"  # claimed by a worker (lease)
    RETRYING = "retrying"  # transient failure, next attempt scheduled
    RECONCILING = "reconciling"  # the request may have reached the provider: wait for its events
    UNKNOWN = "unknown"  # may or may not have reached the recipient and nothing can tell: never re-sent
    # automatically; the owner alert lists it and resend-to-failed offers it
    SENT = "sent"  # accepted by the provider (message id recorded)
    DELIVERED = "delivered"  # provider confirmed delivery
    BOUNCED = "bounced"
    DROPPED = "dropped"
    FAILED = "failed"  # permanent failure or retries exhausted
    SUPPRESSED = "suppressed"  # recipient suppressed; nothing sent


DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.QUEUED: frozenset({DeliveryStatus.SENDING, DeliveryStatus.SUPPRESSED}),
    DeliveryStatus.SENDING: frozenset(
        {
            DeliveryStatus.SENDING,  # lease expired: the next worker takes over
            DeliveryStatus.SENT,
            DeliveryStatus.RETRYING,
            DeliveryStatus.FAILED,
            DeliveryStatus.RECONCILING,
            DeliveryStatus.UNKNOWN,
        }
    ),
    DeliveryStatus.RETRYING: frozenset({DeliveryStatus.SENDING, DeliveryStatus.FAILED}),
    DeliveryStatus.RECONCILING: frozenset({DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.FAILED}),
    # A late provider event may still confirm it; resend-to-failed re-queues it.
    DeliveryStatus.UNKNOWN: frozenset({DeliveryStatus.SENT, DeliveryStatus.QUEUED}),
    DeliveryStatus.SENT: frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.BOUNCED, DeliveryStatus.DROPPED}),
    # A late bounce can follow a delivered event (asynchronous bounce).
    DeliveryStatus.DELIVERED: frozenset({DeliveryStatus.BOUNCED}),
    DeliveryStatus.BOUNCED: frozenset(),
    DeliveryStatus.DROPPED: frozenset(),
    DeliveryStatus.FAILED: frozenset({DeliveryStatus.QUEUED}),  # resend to failed (admin action)
    DeliveryStatus.SUPPRESSED: frozenset(),
}

# Statuses in which a delivery still has work to do; a run completes when none is left.
DELIVERY_OPEN = frozenset(
    {DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRYING, DeliveryStatus.RECONCILING}
)
DELIVERY_CLAIMABLE = frozenset({DeliveryStatus.QUEUED, DeliveryStatus.RETRYING, DeliveryStatus.SENDING})
DELIVERY_FAILED = frozenset({DeliveryStatus.FAILED, DeliveryStatus.BOUNCED, DeliveryStatus.DROPPED})
# Not known to have arrived: what the owner alert lists and resend-to-failed offers.
DELIVERY_NOT_DELIVERED = DELIVERY_FAILED | {DeliveryStatus.UNKNOWN}
RUN_OPEN = frozenset({RunStatus.PENDING, RunStatus.WAITING, RunStatus.RENDERING, RunStatus.DELIVERING})


def run_sources(from_statuses: Iterable[RunStatus], to: RunStatus) -> frozenset[RunStatus]:
    """The from-states of a conditional run write, checked against RUN_TRANSITIONS: the one
    source of truth. Asking for an edge the table does not list is a bug, refused loudly."""
    sources = frozenset(from_statuses)
    for current in sources:
        check_run(current, to)
    return sources


def delivery_sources(from_statuses: Iterable[DeliveryStatus], to: DeliveryStatus) -> frozenset[DeliveryStatus]:
    """As ``run_sources``, for DELIVERY_TRANSITIONS."""
    sources = frozenset(from_statuses)
    for current in sources:
        check_delivery(current, to)
    return sources


def check_run(current: RunStatus, target: RunStatus) -> None:
    if target not in RUN_TRANSITIONS[current]:
        raise InvalidTransition(f"run cannot go from {current} to {target}")


def check_delivery(current: DeliveryStatus, target: DeliveryStatus) -> None:
    if target not in DELIVERY_TRANSITIONS[current]:
        raise InvalidTransition(f"delivery cannot go from {current} to {target}")


def run_outcome(delivered: int, failed: int) -> RunStatus:
    """Final status of a run once no delivery is open."""
    if failed and not delivered:
        return RunStatus.FAILED
    if failed:
        return RunStatus.PARTIAL
    return RunStatus.SUCCEEDED
