"""What a recipient can do with their personal link token: download, ask for a fresh
link once it expired (decision 7), and unsubscribe from the report (RFC 8058)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from herald.domain import ids
from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus
from herald.ports.container import Container
from herald.ports.store import Suppression
from herald.services.tasks import send_task

log = logging.getLogger(__name__)


def link_expires(c: Container, d: Delivery) -> datetime:
    return d.created_at + timedelta(seconds=c.settings.link_ttl_seconds)


def record_download(c: Container, d: Delivery, user_agent: str) -> Delivery | None:
    """Count one download, atomically: two clicks at once count two."""
    now = c.clock.now().isoformat()

    def count(current: Delivery) -> dict[str, Any]:
        downloads = dict(current.events.get("downloads") or {})
        downloads["count"] = int(downloads.get("count", 0)) + 1
        downloads.setdefault("first_at", now)
        downloads["last_at"] = now
        downloads["last_user_agent"] = user_agent[:200]
        return {"events": {**current.events, "downloads": downloads}}

    return c.store.mutate_delivery(d.id, count)


RENEWALS_KEPT = 20  # the renewal log on a delivery keeps the newest this many


@dataclass(frozen=True)
class Renewal:
    status: str  # "sent", "limited", "not-expired", "suppressed"
    delivery_id: str | None = None
    retry_after: float | None = None


def renew(c: Container, d: Delivery) -> Renewal:
    """Send a fresh link to the same address, at most once per settings.link_renew_interval_seconds.

    The fresh link is a new delivery of the same run (``events.renewal_of`` names the
    expired one, whose ``events.renewals`` lists what it caused), sent through the normal
    send path: the log shows two sends to that recipient because there were two.
    """
    now = c.clock.now()
    if now <= link_expires(c, d):
        return Renewal("not-expired")
    interval = timedelta(seconds=c.settings.link_renew_interval_seconds)
    decided: dict[str, Any] = {}

    def reserve(current: Delivery) -> dict[str, Any] | None:
        renewals = list(current.events.get("renewals") or [])
        if renewals and datetime.fromisoformat(renewals[-1]["at"]) + interval > now:
            decided["wait"] = (datetime.fromisoformat(renewals[-1]["at"]) + interval - now).total_seconds()
            return None
        # Numbered by a count of its own: the list keeps only the last 20, so its length
        # would repeat the 21st id from then on (and a repeated id creates and sends nothing).
        # A delivery renewed before the count existed with its list full made renewals 1..21.
        legacy = len(renewals) + (1 if len(renewals) >= RENEWALS_KEPT else 0)
        number = int(current.events.get("renewal_count", legacy)) + 1
        new_id = ids.delivery_id(current.id, "renew", str(number))
        decided["id"] = new_id
        renewals = [*renewals, {"at": now.isoformat(), "delivery_id": new_id}][-RENEWALS_KEPT:]
        return {"events": {**current.events, "renewals": renewals, "renewal_count": number}, "updated_at": now}

    if c.store.mutate_delivery(d.id, reserve) is None:
        return Renewal("limited", retry_after=max(1.0, float(decided.get("wait", interval.total_seconds()))))
    suppressed = d.channel == "email" and c.store.find_suppression(d.recipient, d.report_id) is not None
    fresh = Delivery(
        id=decided["id"],
        run_id=d.run_id,
        report_id=d.report_id,
        channel=d.channel,
        recipient=d.recipient,
        status=DeliveryStatus.SUPPRESSED if suppressed else DeliveryStatus.QUEUED,
        link_token=secrets.token_urlsafe(24),  # 192 bits, like every link
        events={"renewal_of": d.id},
        created_at=now,
        updated_at=now,
    )
    c.store.create_deliveries([fresh])
    if suppressed:
        return Renewal("suppressed", fresh.id)
    c.queue.enqueue(send_task(fresh.id, 0))
    log.info("fresh link requested", extra={"delivery_id": d.id, "renewal": fresh.id, "run_id": d.run_id})
    return Renewal("sent", fresh.id)


def unsubscribe(c: Container, d: Delivery) -> bool:
    """One-click unsubscribe from this report (RFC 8058); True when it is new."""
    now = c.clock.now()
    added = c.store.add_suppression(Suppression(d.recipient.lower(), d.report_id, "unsubscribe", now))

    def note(cur: Delivery) -> dict[str, Any] | None:
        if cur.events.get("unsubscribed_at"):
            return None
        return {"events": {**cur.events, "unsubscribed_at": now.isoformat()}}

    c.store.mutate_delivery(d.id, note)
    log.info("recipient unsubscribed", extra={"delivery_id": d.id, "report_id": d.report_id, "new": added})
    return added
