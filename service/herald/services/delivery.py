"""Send one delivery: claim it, send it, record the outcome or schedule the retry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from herald.bootstrap import Container
from herald.domain.errors import DeliveryError
from herald.domain.records import Delivery
from herald.domain.states import DELIVERY_OPEN, DeliveryStatus
from herald.services import events, messages
from herald.services.tasks import finish_run_task, send_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendOutcome:
    """What the task route answers: ``retry_after`` set means 503 + Retry-After."""

    status: str
    retry_after: float | None = None


def link_for(c: Container, delivery: Delivery) -> str:
    return f"{c.settings.public_url}/l/{delivery.link_token}"


def send_delivery(c: Container, delivery_id: str) -> SendOutcome:
    now = c.clock.now()
    delivery = c.store.claim_delivery(delivery_id, now, now + c.lease)
    if delivery is None:
        return _not_claimed(c, delivery_id)
    run = c.store.get_run(delivery.run_id)
    stored = c.store.get_report(delivery.report_id)
    if run is None or stored is None:
        _fail(c, delivery, "the run or report no longer exists", permanent=True)
        return SendOutcome("failed")
    report = stored.definition
    try:
        if delivery.channel == "email":
            expires = delivery.created_at + timedelta(seconds=c.settings.link_ttl_seconds)
            unsubscribe = f"{c.settings.public_url}/unsubscribe/{delivery.link_token}"
            result = c.mailer.send(
                messages.email_message(report, run, delivery, link_for(c, delivery), expires, unsubscribe)
            )
        else:
            file = None
            if report.slack_file and run.artifact_key:
                data, _ = c.blobs.get(run.artifact_key)
                file = (run.artifact_key.rsplit("/", 1)[-1], data)
            result = c.chat.post(messages.chat_message(report, run, delivery, link_for(c, delivery), file))
    except DeliveryError as exc:
        return _failed_attempt(c, delivery, exc)
    now = c.clock.now()
    sent = c.store.transition_delivery(
        delivery.id,
        [DeliveryStatus.SENDING],
        DeliveryStatus.SENT,
        provider_message_id=result.message_id,
        delivered_at=now,
        updated_at=now,
        last_error="",
        error_kind="",
        lease_until=None,
        attempt_log=delivery.log_attempt(now, "sent"),
    )
    log.info(
        "delivery sent",
        extra={
            "delivery_id": delivery.id,
            "run_id": delivery.run_id,
            "channel": delivery.channel,
            "attempt": delivery.attempts,
        },
    )
    if sent is None:  # our lease expired mid-send and another worker took over: it owns the outcome
        log.warning("lease lost during send", extra={"delivery_id": delivery.id})
    _maybe_finish(c, delivery.run_id)
    return SendOutcome("sent")


def _not_claimed(c: Container, delivery_id: str) -> SendOutcome:
    current = c.store.get_delivery(delivery_id)
    if current is None:
        return SendOutcome("unknown")
    now = c.clock.now()
    if current.status == DeliveryStatus.SENDING and current.lease_until and current.lease_until > now:
        # Another worker holds it (or a crashed one did): look again when its lease ends.
        return SendOutcome("leased", retry_after=(current.lease_until - now).total_seconds() + 1)
    if current.status in DELIVERY_OPEN and current.next_attempt_at and current.next_attempt_at > now:
        return SendOutcome("not-due", retry_after=(current.next_attempt_at - now).total_seconds())
    if current.status == DeliveryStatus.SUPPRESSED or current.status not in DELIVERY_OPEN:
        _maybe_finish(c, current.run_id)
    return SendOutcome("done")


def _failed_attempt(c: Container, delivery: Delivery, exc: DeliveryError) -> SendOutcome:
    attempt = delivery.attempts
    delay = None if exc.permanent else c.retry.delay_after(attempt, exc.retry_after)
    kind = "permanent" if exc.permanent else "transient"
    log.warning(
        "delivery attempt failed",
        extra={
            "delivery_id": delivery.id,
            "run_id": delivery.run_id,
            "attempt": attempt,
            "kind": kind,
            "error": exc.message,
        },
    )
    if delay is None:
        reason = exc.message if exc.permanent else f"gave up after {attempt} attempts: {exc.message}"
        _fail(c, delivery, reason, permanent=exc.permanent, log_result=kind)
        return SendOutcome("failed")
    now = c.clock.now()
    retrying = c.store.transition_delivery(
        delivery.id,
        [DeliveryStatus.SENDING],
        DeliveryStatus.RETRYING,
        next_attempt_at=now + delay,
        last_error=exc.message,
        error_kind=kind,
        lease_until=None,
        updated_at=now,
        attempt_log=delivery.log_attempt(now, kind, exc.message),
    )
    if retrying is not None:
        c.queue.enqueue(send_task(delivery.id, attempt, eta=now + delay))
    return SendOutcome("retrying")


def _fail(c: Container, delivery: Delivery, reason: str, *, permanent: bool, log_result: str = "permanent") -> None:
    now = c.clock.now()
    failed = c.store.transition_delivery(
        delivery.id,
        [DeliveryStatus.SENDING],
        DeliveryStatus.FAILED,
        last_error=reason,
        error_kind="permanent" if permanent else "transient",
        lease_until=None,
        updated_at=now,
        attempt_log=delivery.log_attempt(now, log_result, reason),
    )
    if failed is not None:
        events.delivery_failed(c, failed, reason, permanent=permanent)
    _maybe_finish(c, delivery.run_id)


def _maybe_finish(c: Container, run_id: str) -> None:
    # Every delivery writes its final state before looking, so the last one always sees none open.
    if not c.store.has_open_deliveries(run_id):
        c.queue.enqueue(finish_run_task(run_id))
