"""Herald's own side effects as durable work: owner alerts, ops messages, heartbeat pings.

Each is an ``Alert`` record (created once: its id derives from what it is about) with one
``ChannelSend`` per channel, and one task per channel attempt. A channel is claimed with
a lease before it is sent and marked sent in the same conditional write that releases
the claim, so however many tasks race for it, a channel posts at most once. Transient
failures retry on the kind's own bounded schedule (settings); an alert whose channels
all gave up goes to the other configured channel, then shows as undelivered.
This is the only retry loop for notifications (ARCHITECTURE.md decision 9).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from herald.domain.errors import DeliveryError
from herald.domain.ids import heartbeat_id
from herald.domain.records import Alert, ChannelSend
from herald.domain.retry import RetryPolicy
from herald.ports.container import Container
from herald.ports.heartbeat import HeartbeatState
from herald.ports.messages import ChatMessage, EmailMessage
from herald.services.messages import mrkdwn
from herald.services.tasks import notify_task

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"
NOT_NOW_SECONDS = 5.0  # a loser of a race looks again this soon (the winner is sending now)


@dataclass(frozen=True)
class NotifyOutcome:
    """What the task route answers: ``retry_after`` set means 503 + Retry-After."""

    status: str  # sent | retrying | failed | done | leased | not-due | unknown
    retry_after: float | None = None


def policy(c: Container, alert: Alert) -> RetryPolicy:
    """Heartbeats give up quickly (a late ping is a wrong ping); alerts keep trying for over an hour."""
    delays = c.settings.heartbeat_retry_delays if alert.is_heartbeat else c.settings.alert_retry_delays
    return RetryPolicy(delays=delays, max_retries=len(delays))


# Creating -------------------------------------------------------------------------------
def notify(c: Container, alert: Alert) -> bool:
    """Store the notification and queue one task per channel, as one unit of work.

    Idempotent by ``alert.id``: a repeat queues again only the channels still waiting for
    their first attempt (deterministic task names, so nothing runs twice). That also
    mends the gcp case where the record was written and the enqueue failed. True if new."""
    with c.atomic():
        created = c.store.add_alert(alert)
        current = alert if created else (c.store.get_alert(alert.id) or alert)
        first = [notify_task(current.id, ch, 0) for ch, s in current.channels.items() if _untried(s)]
        if first:
            c.queue.enqueue_many(first)
    if created:
        log.info(
            "notification queued", extra={"alert_id": alert.id, "kind": alert.kind, "channels": list(alert.channels)}
        )
    return created


def _untried(state: ChannelSend) -> bool:
    return state.status == "pending" and state.attempts == 0


# Sending ----------------------------------------------------------------------------------
def send_notification(c: Container, alert_id: str, channel: str) -> NotifyOutcome:
    now = c.clock.now()
    lease_until = now + c.lease

    def claim(a: Alert) -> dict[str, Any] | None:
        state = a.channels.get(channel)
        if state is None or state.status in ("sent", "failed"):
            return None
        if state.status == "sending" and state.lease_until and state.lease_until > now:
            return None
        if state.status == "pending" and state.next_attempt_at and state.next_attempt_at > now:
            return None
        taken = state.model_copy(
            update={"status": "sending", "attempts": state.attempts + 1, "lease_until": lease_until}
        )
        return {"channels": {**a.channels, channel: taken}}

    claimed = c.store.mutate_alert(alert_id, claim)
    if claimed is None:
        return _not_claimed(c, alert_id, channel, now)
    state = claimed.channels[channel]
    try:
        skipped = _deliver(c, claimed, channel, state.target)
    except DeliveryError as exc:
        return _failed(c, claimed, channel, state.attempts, exc)
    except Exception as exc:  # a bug or an unexpected answer: transient, within the same limit
        log.exception("notification send raised", extra={"alert_id": alert_id, "channel": channel})
        return _failed(
            c, claimed, channel, state.attempts, DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False)
        )
    return _sent(c, claimed, channel, state.attempts, skipped)


def _not_claimed(c: Container, alert_id: str, channel: str, now: datetime) -> NotifyOutcome:
    current = c.store.get_alert(alert_id)
    state = current.channels.get(channel) if current else None
    if current is None or state is None:
        return NotifyOutcome("unknown")
    if state.status == "sending" and state.lease_until and state.lease_until > now:
        return NotifyOutcome("leased", retry_after=min(NOT_NOW_SECONDS, (state.lease_until - now).total_seconds() + 1))
    if state.status == "pending" and state.next_attempt_at and state.next_attempt_at > now:
        return NotifyOutcome("not-due", retry_after=(state.next_attempt_at - now).total_seconds())
    return NotifyOutcome("done")


def _ours(a: Alert, channel: str, attempt: int) -> ChannelSend | None:
    """The channel as this worker claimed it, or None if another worker has taken over."""
    state = a.channels.get(channel)
    if state is None or state.status != "sending" or state.attempts != attempt:
        return None
    return state


def _sent(c: Container, alert: Alert, channel: str, attempt: int, skipped: str) -> NotifyOutcome:
    now = c.clock.now()

    def done(a: Alert) -> dict[str, Any] | None:
        state = _ours(a, channel, attempt)
        if state is None:
            return None
        finished = state.model_copy(
            update={"status": "sent", "lease_until": None, "sent_at": now, "last_error": skipped}
        )
        return {"channels": {**a.channels, channel: finished}, "sent": True}

    marked = c.store.mutate_alert(alert.id, done)
    if marked is None:
        log.warning("notification lease lost during send", extra={"alert_id": alert.id, "channel": channel})
        return NotifyOutcome("sent")
    if marked.is_heartbeat and marked.run_id and marked.params.get("state") != "start" and not skipped:
        c.store.update_run(marked.run_id, heartbeat_sent=True)  # the monitor acknowledged the final ping
    log.log(
        logging.INFO if marked.is_heartbeat else logging.WARNING,
        "notification sent",
        extra={"alert_id": alert.id, "kind": alert.kind, "channel": channel, "attempt": attempt},
    )
    return NotifyOutcome("sent")


def _failed(c: Container, alert: Alert, channel: str, attempt: int, exc: DeliveryError) -> NotifyOutcome:
    now = c.clock.now()
    delay = None if exc.permanent else policy(c, alert).delay_after(attempt, exc.retry_after)
    log.warning(
        "notification attempt failed",
        extra={
            "alert_id": alert.id,
            "kind": alert.kind,
            "channel": channel,
            "attempt": attempt,
            "permanent": exc.permanent,
            "error": exc.message,
        },
    )
    retry_at = now + delay if delay is not None else None

    def change(a: Alert) -> dict[str, Any] | None:
        state = _ours(a, channel, attempt)
        if state is None:
            return None
        status = "pending" if retry_at is not None else "failed"
        failed = state.model_copy(
            update={"status": status, "lease_until": None, "next_attempt_at": retry_at, "last_error": exc.message[:300]}
        )
        channels = {**a.channels, channel: failed}
        fields: dict[str, Any] = {"channels": channels}
        if status == "failed" and all(s.status == "failed" for s in channels.values()):
            unused = {ch: t for ch, t in a.fallbacks.items() if ch not in channels}
            if unused:  # every channel gave up: the other configured one takes over
                fields["channels"] = {**channels, **{ch: ChannelSend(target=t) for ch, t in unused.items()}}
            elif not a.sent:
                fields["undelivered"] = True
        return fields

    with c.atomic():
        updated = c.store.mutate_alert(alert.id, change)
        if updated is None:
            return NotifyOutcome("done")
        if retry_at is not None:
            c.queue.enqueue(notify_task(alert.id, channel, attempt, eta=retry_at))
        fallback = [notify_task(alert.id, ch, 0) for ch, s in updated.channels.items() if _untried(s)]
        if fallback:
            c.queue.enqueue_many(fallback)
    if retry_at is not None:
        return NotifyOutcome("retrying")
    if fallback:
        log.error(
            "notification channel gave up; trying the other channel",
            extra={"alert_id": alert.id, "channel": channel, "fallback": [t.name for t in fallback]},
        )
    elif updated.undelivered:
        log.error("notification undelivered on every channel", extra={"alert_id": alert.id, "kind": alert.kind})
    return NotifyOutcome("failed")


# Channels ----------------------------------------------------------------------------------
def _deliver(c: Container, alert: Alert, channel: str, target: str) -> str:
    """Send one channel; raise DeliveryError on failure. Returns a note when it chose not to send."""
    if channel == "email":
        c.mailer.send(
            EmailMessage(
                to=target,
                subject=f"[Herald] {alert.subject}",
                text=alert.body,
                html="<pre>" + _escape(alert.body) + "</pre>",
                custom_args={"alert_id": alert.id},
                categories=("herald-alert",),
                idempotency_key=alert.id,
            )
        )
        return ""
    if channel == "slack":
        c.chat.post(
            # Subjects and bodies carry provider and event text (bounce reasons, report names): inert in Slack.
            ChatMessage(
                target=target,
                text=f"*{mrkdwn(alert.subject)}*\n{mrkdwn(alert.body)}",
                idempotency_key=f"{alert.id}-slack",
            )
        )
        return ""
    if channel == HEARTBEAT:
        return _ping(c, alert)
    raise DeliveryError(f"unknown notification channel {channel!r}", permanent=True)


def _ping(c: Container, alert: Alert) -> str:
    state: HeartbeatState = alert.params.get("state", "success")  # type: ignore[assignment]
    url: str | None = None
    if alert.params.get("url_from") == "watchdog":
        url = c.settings.watchdog_heartbeat_url
    else:
        stored = c.store.get_report(alert.report_id or "")
        url = stored.definition.heartbeat_url if stored else None
    if not url:
        return "no heartbeat URL any more"
    if state == "start" and alert.run_id:
        finals = [c.store.get_alert(heartbeat_id(end, alert.run_id)) for end in ("success", "fail")]
        if any(final is not None and final.sent for final in finals):
            # A /start after the run's final ping would leave the monitor waiting for an end.
            return "the run's final ping was sent first"
    c.heartbeat.ping(url, state, alert.params.get("rid") or alert.run_id or alert.id, alert.body)
    return ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
