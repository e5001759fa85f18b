"""Alerts to report owners: stored first (the record is the proof), then sent once."""

from __future__ import annotations

import logging

from herald.bootstrap import Container
from herald.domain.errors import DeliveryError
from herald.domain.ids import alert_id
from herald.domain.records import Alert
from herald.ports.messages import EmailMessage

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
    message = EmailMessage(
        to=alert.target,
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
        log.error("owner alert not sent", extra={"alert_id": alert.id, "error": exc.message})
        return
    c.store.mark_alert_sent(alert.id)
    log.warning("owner alerted", extra={"alert_id": alert.id, "report_id": alert.report_id, "kind": alert.kind})


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
