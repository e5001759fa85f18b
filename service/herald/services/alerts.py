"""Alerts to report owners: stored first (the record is the proof), then sent once."""

from __future__ import annotations

import logging

from herald.bootstrap import Container
from herald.domain.errors import DeliveryError
from herald.domain.ids import alert_id
from herald.domain.records import Alert
from herald.ports.messages import ChatMessage, EmailMessage

log = logging.getLogger(__name__)


def alert_owner(
    c: Container, *, kind: str, owner: str, report_id: str, run_id: str | None, subject: str, body: str
) -> Alert:
    """Idempotent per (kind, run): a redelivered task never alerts twice."""
    alert = Alert(
        id=alert_id(kind, report_id, run_id or ""),
        kind=kind,
        target=owner,
        report_id=report_id,
        run_id=run_id,
        subject=subject,
        body=body,
        created_at=c.clock.now(),
    )
    if not c.store.add_alert(alert):
        existing = c.store.get_alert(alert.id)
        if existing is not None and existing.sent:
            return existing
    send_alert(c, alert)
    return alert


def send_alert(c: Container, alert: Alert) -> None:
    """An owner alert goes to every channel in settings.alert_channels: e-mail to the owner,
    Slack to settings.owner_slack_channel. It counts as sent once one channel took it (the
    owner knows); a channel that failed is logged. Slack chosen but no channel set: e-mail,
    so an alert is never dropped by configuration."""
    channels = c.settings.alert_channels
    slack = c.settings.owner_slack_channel if "slack" in channels else ""
    delivered = False
    if "email" in channels or not slack:
        delivered |= _email(c, alert, alert.target)
    if slack:
        delivered |= _slack(c, alert, slack)
    if delivered:
        c.store.mark_alert_sent(alert.id)
        log.warning("owner alerted", extra={"alert_id": alert.id, "report_id": alert.report_id, "kind": alert.kind})


def send_ops_alert(c: Container, alert: Alert) -> bool:
    """An ops alert (``alert.target`` is the ops Slack channel): Slack when alert_channels has
    slack, e-mail to settings.ops_email when it has email and an address is set; Slack when
    neither applies. True (and marked sent) once one channel took it."""
    channels = c.settings.alert_channels
    email = c.settings.ops_email if "email" in channels else ""
    delivered = False
    if "slack" in channels or not email:
        delivered |= _slack(c, alert, alert.target)
    if email:
        delivered |= _email(c, alert, email)
    if delivered:
        c.store.mark_alert_sent(alert.id)
    return delivered


def _email(c: Container, alert: Alert, to: str) -> bool:
    message = EmailMessage(
        to=to,
        subject=f"[Herald] {alert.subject}",
        text=alert.body,
        html="<pre>" + _escape(alert.body) + "</pre>",
        custom_args={"alert_id": alert.id},
        categories=("herald-alert",),
        idempotency_key=alert.id,
    )
    try:
        c.mailer.send(message)
    except DeliveryError as exc:
        # The stored alert stays unsent and visible in the admin pages; never crash the run.
        log.error("alert e-mail not sent", extra={"alert_id": alert.id, "error": exc.message})
        return False
    return True


def _slack(c: Container, alert: Alert, target: str) -> bool:
    message = ChatMessage(target=target, text=f"*{alert.subject}*\n{alert.body}", idempotency_key=f"{alert.id}-slack")
    try:
        c.chat.post(message)
    except DeliveryError as exc:
        log.error("alert Slack post failed", extra={"alert_id": alert.id, "error": exc.message})
        return False
    return True


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
