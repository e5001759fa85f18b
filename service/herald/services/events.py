"""Herald's own events for other systems (ports/events.py): run completed, delivery failed.

Publishing never changes an outcome: a run that finished has finished even if the
event could not be published, so a PublishError is logged and swallowed. Each event
carries its own ``event_id`` (deterministic) for subscribers to de-duplicate by.
"""

from __future__ import annotations

import logging
from typing import Any

from herald.domain.records import Delivery, Run
from herald.ports.container import Container
from herald.ports.events import PublishError

log = logging.getLogger(__name__)


def _publish(c: Container, topic_key: str, event: dict[str, Any], ordering_key: str) -> None:
    try:
        c.events.publish(topic_key, event, ordering_key=ordering_key)
    except PublishError as exc:
        log.error(
            "event not published",
            extra={"event_type": event["type"], "event_id": event["event_id"], "error": str(exc)},
        )


def run_completed(c: Container, run: Run, counts: dict[str, int]) -> None:
    _publish(
        c,
        "runs",
        {
            "type": "run.completed",
            "event_id": f"run.completed:{run.id}",
            "run_id": run.id,
            "report_id": run.report_id,
            "status": str(run.status),
            "period": run.period,
            "error": run.error or "",
            "deliveries": {str(k): v for k, v in counts.items()},
            "finished_at": (run.finished_at or c.clock.now()).isoformat(),
        },
        ordering_key=run.report_id,
    )


def delivery_failed(c: Container, delivery: Delivery, reason: str, *, permanent: bool) -> None:
    _publish(
        c,
        "deliveries",
        {
            "type": "delivery.failed",
            "event_id": f"delivery.failed:{delivery.id}",
            "delivery_id": delivery.id,
            "run_id": delivery.run_id,
            "report_id": delivery.report_id,
            "channel": delivery.channel,
            "recipient": delivery.recipient,
            "error": reason,
            "permanent": permanent,
            "attempts": delivery.attempts,
        },
        ordering_key=delivery.run_id,
    )
