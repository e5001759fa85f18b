"""Send one delivery: claim it, send it, record the outcome or schedule the retry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from herald.domain.errors import DeliveryError
from herald.domain.records import MAX_ATTEMPT_LOG, Delivery
from herald.domain.states import DELIVERY_OPEN, DeliveryStatus
from herald.ports.container import Container
from herald.services import content, events, feedback, messages
from herald.services.tasks import finish_run_task, send_task

log = logging.getLogger(__name__)

SEED_MAX_AGE_DAYS = 30  # a first task older than this (Cloud Tasks keeps them 31 days at most) is not trusted
RECONCILE_ATTEMPT_BASE = 2000  # task names of reconcile checks never collide with retries' or resends' (1000)


@dataclass(frozen=True)
class SendOutcome:
    """What the task route answers: ``retry_after`` set means 503 + Retry-After."""

    status: str
    retry_after: float | None = None


def link_for(c: Container, delivery: Delivery) -> str:
    return f"{c.settings.public_url}/l/{delivery.link_token}"


def send_delivery(c: Container, delivery_id: str, seed: Delivery | None = None) -> SendOutcome:
    """``seed``: the delivery as fanned out, carried by its first task (store.deferred_deliveries)."""
    now = c.clock.now()
    delivery = c.store.claim_delivery(delivery_id, now, now + c.lease, usable_seed(seed, delivery_id, now))
    if delivery is None:
        return _not_claimed(c, delivery_id)
    if _lost_attempt(delivery):
        # A worker claimed it before and recorded no outcome (it crashed, or its lease ran out
        # mid-send): that request may have reached the provider. Reconcile first (decision 5);
        # where nothing can confirm it, never guess.
        if _reconcilable(c, delivery):
            return _await_reconcile(c, delivery, "the previous attempt left no outcome", delivery.attempts - 1)
        if _resend_is_a_duplicate_risk(c, delivery):
            return _give_up_unknown(c, delivery, "the previous attempt left no outcome")
    return _send_claimed(c, delivery)


def _send_claimed(c: Container, delivery: Delivery) -> SendOutcome:
    found = content.for_store(c.store).get(c.store, delivery.run_id, c.clock.now())
    if found is None:
        _fail(c, delivery, "the run or report no longer exists", permanent=True)
        return SendOutcome("failed")
    run, report = found.run, found.report
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
    except Exception as exc:  # not a provider's verdict (a bug, a bad header): transient, within the retry limit
        log.exception(
            "send raised an unexpected error",
            extra={"delivery_id": delivery.id, "run_id": delivery.run_id, "attempt": delivery.attempts},
        )
        return _failed_attempt(c, delivery, DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False))
    now = c.clock.now()
    # Not one unit of work with the look at the run: the outcome is a compare-and-set that
    # holds the write lock for its UPDATE alone (issue 14). A crash between the two leaves
    # this task unsettled, so it runs again, finds the delivery final and looks then.
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
    _maybe_finish(c, delivery.run_id)
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
    elif sent.events:  # provider events beat our own write (a fast webhook): let them move it on
        feedback.settle(c, sent.id)
    return SendOutcome("sent")


def usable_seed(seed: Delivery | None, delivery_id: str, now: datetime) -> Delivery | None:
    """A seed as a fan-out makes it (queued, untouched, created lately), else none: the
    claim then reads the delivery's page entry instead of writing what a task body says."""
    if seed is None or seed.id != delivery_id or seed.status != DeliveryStatus.QUEUED:
        return None
    untouched = seed.attempts == 0 and not seed.attempt_log and not seed.events and seed.provider_message_id is None
    recent = now - timedelta(days=SEED_MAX_AGE_DAYS) <= seed.created_at <= now + timedelta(days=1)
    return seed if untouched and recent else None


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
    if current.status == DeliveryStatus.RECONCILING:  # the reconcile wait is over and no event confirmed it
        return _reconcile_timeout(c, current)
    if current.status == DeliveryStatus.SUPPRESSED or current.status not in DELIVERY_OPEN:
        _maybe_finish(c, current.run_id)
    return SendOutcome("done")


def _failed_attempt(c: Container, delivery: Delivery, exc: DeliveryError) -> SendOutcome:
    attempt = delivery.attempts
    if exc.unknown and not exc.permanent:
        if _reconcilable(c, delivery):
            return _await_reconcile(c, delivery, exc.message, attempt)
        if _resend_is_a_duplicate_risk(c, delivery):
            return _give_up_unknown(c, delivery, exc.message)
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
    with c.atomic():
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


def _fail(
    c: Container,
    delivery: Delivery,
    reason: str,
    *,
    permanent: bool,
    log_result: str = "permanent",
    from_status: DeliveryStatus = DeliveryStatus.SENDING,
) -> None:
    now = c.clock.now()
    with c.atomic():
        failed = c.store.transition_delivery(
            delivery.id,
            [from_status],
            DeliveryStatus.FAILED,
            last_error=reason,
            error_kind="permanent" if permanent else "transient",
            lease_until=None,
            updated_at=now,
            attempt_log=delivery.log_attempt(now, log_result, reason),
        )
        _maybe_finish(c, delivery.run_id)
    if failed is not None:
        events.delivery_failed(c, failed, reason, permanent=permanent)


def _maybe_finish(c: Container, run_id: str) -> None:
    # Every delivery commits its final state before looking, so the last one always sees none
    # open (two last ones may both see it: the finish task's name makes that one task). The
    # look comes before this send task is settled: a crash in between runs the task again,
    # which finds its delivery final and looks again (_not_claimed), so the finish is never
    # left unqueued. The look is a read: the write lock is taken only to enqueue.
    if c.store.deferred_deliveries:
        return  # the run's finish task polls instead (services/runs.py): looking costs reads per delivery
    if not c.store.has_open_deliveries(run_id):
        c.queue.enqueue(finish_run_task(run_id))


# Unknown outcomes (decision 5) ---------------------------------------------------------
def _reconcilable(c: Container, delivery: Delivery) -> bool:
    """SendGrid's Event Webhook can tell whether an e-mail got through (its ``processed``
    event carries our delivery id) — but only when Herald receives those events, i.e. the
    webhook's verification key is configured."""
    return (
        delivery.channel == "email"
        and bool(c.settings.sendgrid_api_key)
        and bool(c.settings.sendgrid_webhook_public_key)
    )


def _resend_is_a_duplicate_risk(c: Container, delivery: Delivery) -> bool:
    """Would a resend after an unknown outcome possibly reach the recipient twice? Yes for
    SendGrid without events and for Slack (no feed tells). The outbox writes one file per
    delivery id, so a resend there overwrites itself and is safe."""
    if delivery.channel == "slack":
        return bool(c.settings.slack_bot_token or c.settings.slack_live)
    return bool(c.settings.sendgrid_api_key)


def _give_up_unknown(c: Container, delivery: Delivery, reason: str) -> SendOutcome:
    """Nothing can confirm this send: never re-send it on our own. It stays ``unknown``;
    the owner alert lists it and resend-to-failed offers it."""
    now = c.clock.now()
    with c.atomic():
        given_up = c.store.transition_delivery(
            delivery.id,
            [DeliveryStatus.SENDING],
            DeliveryStatus.UNKNOWN,
            lease_until=None,
            next_attempt_at=None,
            last_error=f"outcome unknown, not re-sent: {reason}",
            error_kind="transient",
            updated_at=now,
            attempt_log=delivery.log_attempt(now, "unknown", reason),
        )
        _maybe_finish(c, delivery.run_id)
    log.warning(
        "delivery outcome unknown and unconfirmable: not re-sent",
        extra={"delivery_id": delivery.id, "run_id": delivery.run_id, "error": reason},
    )
    return SendOutcome("unknown-outcome") if given_up is not None else SendOutcome("done")


def _lost_attempt(delivery: Delivery) -> bool:
    """Did an earlier attempt of this claimed delivery end without any recorded outcome?"""
    if len(delivery.attempt_log) >= MAX_ATTEMPT_LOG:  # capped: cannot tell, keep the old behaviour
        return False
    outcomes = sum(1 for e in delivery.attempt_log if e.get("result") not in ("resend", "confirmed"))
    return outcomes < delivery.attempts - 1


def _await_reconcile(c: Container, delivery: Delivery, reason: str, attempts: int) -> SendOutcome:
    """Mark the delivery unknown and look again after settings.reconcile_wait_seconds; a
    SendGrid event for it meanwhile moves it to sent (services/feedback.py)."""
    now = c.clock.now()
    due = now + timedelta(seconds=c.settings.reconcile_wait_seconds)
    with c.atomic():
        waiting = c.store.transition_delivery(
            delivery.id,
            [DeliveryStatus.SENDING],
            DeliveryStatus.RECONCILING,
            attempts=attempts,  # a claim that sent nothing is not an attempt
            next_attempt_at=due,
            lease_until=None,
            last_error=f"outcome unknown: {reason}",
            error_kind="transient",
            updated_at=now,
            attempt_log=delivery.log_attempt(now, "unknown", reason),
        )
        if waiting is not None:
            c.queue.enqueue(send_task(delivery.id, RECONCILE_ATTEMPT_BASE + attempts, eta=due))
    log.warning("delivery outcome unknown", extra={"delivery_id": delivery.id, "attempt": attempts, "error": reason})
    if waiting is not None and waiting.events:  # the provider's events may have come in meanwhile
        feedback.settle(c, delivery.id)
    return SendOutcome("reconciling")


def _reconcile_timeout(c: Container, current: Delivery) -> SendOutcome:
    """No event confirmed the unknown send in time: send it again (once more), marked resent."""
    now = c.clock.now()
    if c.retry.delay_after(max(1, current.attempts)) is None:
        reason = f"outcome unknown after {current.attempts} attempts and no provider event confirmed it"
        _fail(c, current, reason, permanent=False, log_result="unknown", from_status=DeliveryStatus.RECONCILING)
        return SendOutcome("failed")

    def take(d: Delivery) -> dict[str, object] | None:
        if d.status != DeliveryStatus.RECONCILING or (d.next_attempt_at and d.next_attempt_at > now):
            return None  # an event confirmed it meanwhile, or another worker took it
        return {
            "status": DeliveryStatus.SENDING,
            "attempts": d.attempts + 1,
            "lease_until": now + c.lease,
            "next_attempt_at": None,
            "updated_at": now,
            "events": {**d.events, "reconciled": "resent"},
        }

    claimed = c.store.mutate_delivery(current.id, take)
    if claimed is None:
        return SendOutcome("done")
    log.warning("unknown send not confirmed: resending", extra={"delivery_id": claimed.id, "attempt": claimed.attempts})
    return _send_claimed(c, claimed)
