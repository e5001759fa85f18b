"""Alerts to report owners and the ops channel, and heartbeat pings: built here, then
stored and sent once as durable notifications (services/notifications.py)."""

from __future__ import annotations

from herald.domain.ids import alert_id, heartbeat_id
from herald.domain.records import Alert, ChannelSend, Run
from herald.ports.container import Container
from herald.ports.heartbeat import HeartbeatState
from herald.services.notifications import HEARTBEAT, notify


def owner_channels(c: Container, owner: str) -> tuple[dict[str, str], dict[str, str]]:
    """(channels, fallbacks) of an owner alert: settings.alert_channels picks e-mail to the
    owner and/or Slack to settings.owner_slack_channel; Slack chosen but no channel set means
    e-mail, so an alert is never dropped by configuration. The unused one is the fallback."""
    configured: dict[str, str] = {"email": owner, "slack": c.settings.owner_slack_channel}
    return _split(c, configured, primary_default="email")


def ops_channels(c: Container, ops_channel: str) -> tuple[dict[str, str], dict[str, str]]:
    """(channels, fallbacks) of an ops message: Slack to the ops channel and/or e-mail to
    settings.ops_email, by settings.alert_channels; Slack when neither applies."""
    configured: dict[str, str] = {"slack": ops_channel, "email": c.settings.ops_email}
    return _split(c, configured, primary_default="slack")


def _split(c: Container, configured: dict[str, str], primary_default: str) -> tuple[dict[str, str], dict[str, str]]:
    available = {ch: target for ch, target in configured.items() if target}
    chosen: dict[str, str] = {ch: t for ch, t in available.items() if ch in c.settings.alert_channels}
    if not chosen:
        chosen = {primary_default: configured[primary_default]}
    return chosen, {ch: t for ch, t in available.items() if ch not in chosen}


def build(
    c: Container,
    *,
    the_id: str,
    kind: str,
    target: str,
    channels: tuple[dict[str, str], dict[str, str]],
    report_id: str | None,
    run_id: str | None,
    subject: str,
    body: str,
) -> Alert:
    primary, fallbacks = channels
    return Alert(
        id=the_id,
        kind=kind,
        target=target,
        report_id=report_id,
        run_id=run_id,
        subject=subject,
        body=body,
        created_at=c.clock.now(),
        channels={ch: ChannelSend(target=t) for ch, t in primary.items()},
        fallbacks=fallbacks,
    )


def alert_owner(
    c: Container, *, kind: str, owner: str, report_id: str, run_id: str | None, subject: str, body: str
) -> bool:
    """Idempotent per (kind, report, run): a redelivered task never alerts twice. True if new."""
    alert = build(
        c,
        the_id=alert_id(kind, report_id, run_id or ""),
        kind=kind,
        target=owner,
        channels=owner_channels(c, owner),
        report_id=report_id,
        run_id=run_id,
        subject=subject,
        body=body,
    )
    return notify(c, alert)


def ops_alert(c: Container, alert: Alert) -> bool:
    """An ops message (``alert.target`` is the ops Slack channel), routed by settings."""
    primary, fallbacks = ops_channels(c, alert.target)
    routed = alert.model_copy(
        update={"channels": {ch: ChannelSend(target=t) for ch, t in primary.items()}, "fallbacks": fallbacks}
    )
    return notify(c, routed)


def ops_message(
    c: Container,
    *,
    the_id: str,
    kind: str,
    report_id: str | None,
    run_id: str | None,
    subject: str,
    body: str,
) -> bool:
    """An ops message to settings.ops_slack_channel (and ops e-mail, by settings), once per id."""
    message = Alert(
        id=the_id,
        kind=kind,
        target=c.settings.ops_slack_channel,
        report_id=report_id,
        run_id=run_id,
        subject=subject,
        body=body,
        created_at=c.clock.now(),
    )
    return ops_alert(c, message)


def heartbeat(
    c: Container,
    *,
    state: HeartbeatState,
    run: Run | None,
    report_id: str | None,
    message: str,
    rid: str = "",
    url_from: str = "report",
) -> bool:
    """One ping as a notification, once per (run, state). The URL is read when it is sent."""
    subject_id = run.id if run else rid
    return notify(
        c,
        Alert(
            id=heartbeat_id(state, subject_id),
            kind="heartbeat",
            target=url_from,
            report_id=report_id,
            run_id=run.id if run else None,
            subject=f"{state} ping",
            body=message,
            created_at=c.clock.now(),
            channels={HEARTBEAT: ChannelSend(target="")},
            params={"state": state, "url_from": url_from, "rid": rid},
        ),
    )
