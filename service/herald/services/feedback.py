"""SendGrid Event Webhook feedback: what became of each e-mail (ARCHITECTURE.md decision 8).

Event fields: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
Events arrive late, duplicated (SendGrid retries for 24 h) and out of order, so:
- each ``sg_event_id`` is applied once (the store remembers it with the delivery write);
- events are correlated by our custom args (``delivery_id``, echoed as a top-level key),
  else by the ``sg_message_id`` prefix, which is the X-Message-Id the send recorded;
- facts are kept as first times (the earliest event time wins) and counters; the status
  is derived from the facts and only moves forward through the transition table, so a
  late ``delivered`` never overwrites ``bounced``, and an open implies delivery.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from herald.domain.records import Delivery
from herald.domain.states import DELIVERY_TRANSITIONS, DeliveryStatus
from herald.ports.container import Container
from herald.ports.store import Suppression
from herald.services.tasks import finish_run_task

log = logging.getLogger(__name__)

KIND = "sendgrid"
HISTORY_CAP = 20
KNOWN = frozenset(
    {
        "processed",
        "dropped",
        "delivered",
        "deferred",
        "bounce",
        "open",
        "click",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
    }
)
# Facts that prove the message reached the mailbox: an open (even a machine open, e.g. Apple
# Mail Privacy Protection fetching it), a click, a spam report or an unsubscribe.
_REACHED = ("delivered_at", "opened_at", "machine_opened_at", "clicked_at", "spamreport_at", "unsubscribed_at")
# Statuses provider events may move; before (in flight) and after (final) they only add facts.
_MOVABLE = frozenset(
    {DeliveryStatus.RECONCILING, DeliveryStatus.UNKNOWN, DeliveryStatus.SENT, DeliveryStatus.DELIVERED}
)
# An unconfirmed send: waiting for its events (reconciling) or given up on (unknown).
_UNCONFIRMED = frozenset({DeliveryStatus.RECONCILING, DeliveryStatus.UNKNOWN})
# SendGrid drops mail to addresses on its own suppression lists; mirror those so later runs
# record the recipient as suppressed instead of sending into a drop.
_DROP_REASONS = {
    "Bounced Address": "bounce",
    "Spam Reporting Address": "spamreport",
    "Unsubscribed Address": "unsubscribe",
}


@dataclass
class IngestResult:
    received: int = 0
    applied: int = 0  # new events folded into a delivery
    duplicates: int = 0  # sg_event_id seen before, or twice in this batch
    unmatched: int = 0  # no delivery of ours (alert mail, another sender, a purged record)
    ignored: int = 0  # unknown event types and malformed entries: counted, never applied
    deliveries: int = 0  # deliveries written
    suppressed: int = 0
    lifted: int = 0
    unknown_types: Counter[str] = field(default_factory=Counter)

    def to_doc(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "unknown_types"}
        return {**doc, "unknown_types": dict(self.unknown_types)}


def ingest(c: Container, events: list[Any]) -> IngestResult:
    """Apply one webhook batch. Each delivery is read and written once per batch."""
    now = c.clock.now()
    result = IngestResult(received=len(events))
    by_delivery: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    by_message: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for raw in events:
        if not isinstance(raw, dict) or not isinstance(raw.get("event"), str):
            result.ignored += 1
            continue
        if raw["event"] not in KNOWN:
            result.ignored += 1
            result.unknown_types[raw["event"][:40]] += 1
            continue
        pair = (_event_id(raw), raw)
        delivery_id = raw.get("delivery_id")
        if isinstance(delivery_id, str) and delivery_id:
            by_delivery[delivery_id].append(pair)
        elif isinstance(raw.get("sg_message_id"), str) and raw["sg_message_id"]:
            by_message[raw["sg_message_id"].split(".", 1)[0]].append(pair)
        else:
            result.unmatched += 1
    for message_id, pairs in by_message.items():  # rare: events of mail sent without our custom args
        found = c.store.find_delivery_by_message_id(message_id)
        if found is None:
            result.unmatched += len(pairs)
        else:
            by_delivery[found.id] += pairs
    for pairs in by_delivery.values():
        pairs.sort(key=lambda pair: _timestamp(pair[1], now))  # the event's own time orders it

    before: dict[str, DeliveryStatus] = {}

    def fold(d: Delivery, new: list[Any]) -> dict[str, Any] | None:
        before[d.id] = d.status  # idempotent if the store runs this again
        return fold_events(d, new, now)

    written = c.store.apply_delivery_events(KIND, by_delivery, now, fold)
    new_events: list[tuple[Delivery, dict[str, Any]]] = []
    for delivery_id, pairs in by_delivery.items():
        if delivery_id not in written:
            result.unmatched += len(pairs)
            continue
        delivery, fresh = written[delivery_id]
        result.applied += len(fresh)
        result.duplicates += len(pairs) - len(fresh)
        result.deliveries += bool(fresh)
        fresh_ids = set(fresh)
        new_events += [(delivery, event) for event_id, event in pairs if event_id in fresh_ids]
    _suppressions(c, new_events, result)
    _finish_reconciled(c, written, before)
    log.info("sendgrid events", extra={k: v for k, v in result.to_doc().items() if v})
    return result


def settle(c: Container, delivery_id: str) -> Delivery | None:
    """Re-derive the status from facts already kept: events that came in before our own
    write moved the delivery to sent or unknown (a webhook faster than the send's answer)."""
    now = c.clock.now()
    before: dict[str, DeliveryStatus] = {}

    def change(d: Delivery) -> dict[str, Any] | None:
        if d.status not in _MOVABLE or not d.events:
            return None
        ev = dict(d.events)
        fields = _status_fields(d, ev, d.provider_message_id or ev.get("message_id"), now)
        if fields.get("status", d.status) == d.status:
            return None
        before[d.id] = d.status
        return {**fields, "events": ev, "updated_at": now}

    settled = c.store.mutate_delivery(delivery_id, change)
    if settled is not None:
        _finish_reconciled(c, {settled.id: (settled, [])}, before)
    return settled


# Folding events into a delivery (pure) ---------------------------------------------------
def fold_events(d: Delivery, events: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The fields to write after ``events`` (ordered by their timestamps)."""
    ev: dict[str, Any] = dict(d.events)
    history: list[dict[str, Any]] = list(ev.get("history") or [])
    message_id = d.provider_message_id
    for event in events:
        at = _timestamp(event, now).isoformat()
        kind = event["event"]
        entry: dict[str, Any] = {"event": kind, "at": at}
        message_id = message_id or _message_id(event)
        if kind == "processed":
            _first(ev, "processed_at", at)
        elif kind == "delivered":
            _first(ev, "delivered_at", at)
        elif kind == "deferred":
            ev["deferrals"] = int(ev.get("deferrals", 0)) + 1
            entry["response"] = str(event.get("response", ""))[:200]
        elif kind == "bounce":
            # type "bounce": the address is rejected for good (hard). type "blocked": the receiving
            # server refused this message (reputation, content, policy), not the address. Both end
            # this delivery; they differ in suppression (see _suppression_for).
            bounce_type = "blocked" if event.get("type") == "blocked" else "bounce"
            _first(ev, "bounced_at", at)
            ev["bounce_type"] = bounce_type
            ev["bounce_reason"] = str(event.get("reason", ""))[:300]
            ev["bounce_status"] = str(event.get("status", ""))[:20]
            entry["type"] = bounce_type
        elif kind == "dropped":
            _first(ev, "dropped_at", at)
            ev["drop_reason"] = str(event.get("reason", ""))[:300]
        elif kind == "open":
            # sg_machine_open: the open came from a machine (e.g. Apple MPP), not a person.
            machine = event.get("sg_machine_open") is True
            key = "opens_machine" if machine else "opens_human"
            ev[key] = int(ev.get(key, 0)) + 1
            _first(ev, "machine_opened_at" if machine else "opened_at", at)
            entry["machine"] = machine
        elif kind == "click":
            ev["clicks"] = int(ev.get("clicks", 0)) + 1
            _first(ev, "clicked_at", at)  # the URL is not kept: our link is a capability
        elif kind == "spamreport":
            _first(ev, "spamreport_at", at)
        elif kind == "unsubscribe":
            _first(ev, "unsubscribed_at", at)
        elif kind in ("group_unsubscribe", "group_resubscribe"):
            ev[f"{kind}d_at"] = max(at, str(ev.get(f"{kind}d_at", "")), key=_sort_key)
        history.append(entry)
        ev["last_event_at"] = max(at, str(ev.get("last_event_at", "")), key=_sort_key)
    # Delivered at the earliest proof it reached the mailbox (an open or a click can come
    # before SendGrid's own `delivered`), whichever batches the events arrived in.
    if reached := [ev[k] for k in _REACHED if ev.get(k)]:
        _first(ev, "delivered_at", min(reached, key=_sort_key))
    if message_id:  # kept with the facts, so a later settle of an unconfirmed send still has it
        ev["message_id"] = message_id
    history.sort(key=lambda entry: str(entry["at"]))  # whole-second UTC ISO text sorts as time
    ev["history"] = history[-HISTORY_CAP:]
    fields: dict[str, Any] = {"events": ev, "updated_at": now}
    return {**fields, **_status_fields(d, ev, message_id, now)}


def _status_fields(d: Delivery, ev: dict[str, Any], message_id: str | None, now: datetime) -> dict[str, Any]:
    status = d.status
    fields: dict[str, Any] = {}
    if status not in _MOVABLE:
        return fields  # in flight, failed or final: keep the facts, the status is not ours to move
    target = DeliveryStatus.SENT
    if ev.get("bounced_at"):
        target = DeliveryStatus.BOUNCED
    elif ev.get("dropped_at") and status != DeliveryStatus.DELIVERED:
        target = DeliveryStatus.DROPPED
    elif ev.get("delivered_at"):
        target = DeliveryStatus.DELIVERED
    if status in _UNCONFIRMED:
        if not any(ev.get(k) for k in ("processed_at", "bounced_at", "dropped_at", "delivered_at")):
            return fields  # e.g. only a deferral: still waiting for the outcome
        # Decision 5: the provider has the message, so the unknown send happened; never resend it.
        ev["reconciled"] = "confirmed"
        accepted = ev.get("processed_at") or ev.get("delivered_at") or now.isoformat()
        fields.update(
            provider_message_id=message_id,
            delivered_at=datetime.fromisoformat(accepted),
            lease_until=None,
            next_attempt_at=None,
            last_error="",
            error_kind="",
            attempt_log=d.log_attempt(now, "confirmed"),
        )
        status = DeliveryStatus.SENT
    if target != status and target in DELIVERY_TRANSITIONS[status]:
        status = target
    fields["status"] = status
    return fields


def _first(ev: dict[str, Any], key: str, at: str) -> None:
    if not ev.get(key) or _sort_key(at) < _sort_key(ev[key]):
        ev[key] = at


def _sort_key(iso: str) -> str:
    """Event times are whole seconds in UTC (``_timestamp``), so their ISO text sorts as time;
    anything else (e.g. a time written with microseconds) is brought to that form first."""
    if len(iso) == 25 and iso.endswith("+00:00"):
        return iso
    return datetime.fromisoformat(iso).astimezone(UTC).replace(microsecond=0).isoformat() if iso else ""


def _timestamp(event: dict[str, Any], now: datetime) -> datetime:
    raw = event.get("timestamp")
    try:
        return datetime.fromtimestamp(int(raw), UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return now.replace(microsecond=0)


def _message_id(event: dict[str, Any]) -> str | None:
    raw = event.get("sg_message_id")
    return raw.split(".", 1)[0] if isinstance(raw, str) and raw else None


def _event_id(event: dict[str, Any]) -> str:
    raw = event.get("sg_event_id")
    if isinstance(raw, str) and 0 < len(raw) <= 200:
        return raw
    # No id (never seen from SendGrid, but a retry must still not count twice): its content.
    return "h:" + hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()[:40]


# Suppressions ----------------------------------------------------------------------------
def _suppression_for(d: Delivery, event: dict[str, Any]) -> tuple[str, str] | None:
    """(scope, reason) to add, or ("lift", scope) for a resubscribe; None for no change.

    - hard bounce, spam report, SendGrid unsubscribe: global ("*"): the address is dead for
      every report, or the person complained about / opted out of our mail as a whole;
    - group_unsubscribe: global, since Herald sends every report under one ASM group
      (settings.sendgrid_asm_group_id), so SendGrid itself drops all later mail to them;
    - blocked: this report only. SendGrid does not suppress blocks by default (they are
      usually about the sender or the content, https://www.twilio.com/docs/sendgrid/api-reference/blocks-api),
      but the issue asks for it; a report-scoped suppression stops resending the same
      refused content, leaves other reports alone, and can be lifted through the API;
    - Herald's own one-click unsubscribe (services/links.py) is per report.
    """
    kind = event["event"]
    if kind == "bounce":
        return (d.report_id, "blocked") if event.get("type") == "blocked" else ("*", "bounce")
    if kind in ("spamreport", "unsubscribe", "group_unsubscribe"):
        return ("*", kind)
    if kind == "dropped" and event.get("reason") in _DROP_REASONS:
        return ("*", _DROP_REASONS[event["reason"]])
    if kind == "group_resubscribe":
        return ("lift", "*")
    return None


def _suppressions(c: Container, events: list[tuple[Delivery, dict[str, Any]]], result: IngestResult) -> None:
    # The latest event per (recipient, scope) wins, so an unsubscribe and a resubscribe in one
    # batch end as the person left things.
    latest: dict[tuple[str, str], tuple[datetime, str]] = {}
    now = c.clock.now()
    for d, event in events:
        if d.channel != "email":
            continue
        decided = _suppression_for(d, event)
        if decided is None:
            continue
        scope, reason = (decided[1], "lift") if decided[0] == "lift" else decided
        at = _timestamp(event, now)
        key = (d.recipient.lower(), scope)
        if key not in latest or latest[key][0] <= at:
            latest[key] = (at, reason)
    for (recipient, scope), (at, reason) in latest.items():
        if reason == "lift":
            existing = c.store.find_suppression(recipient, scope)
            # Only lift what the group unsubscribe made, and only if it is not newer than the resubscribe.
            ours = existing is not None and existing.scope == scope and existing.reason == "group_unsubscribe"
            if ours and existing is not None and existing.created_at <= at:
                result.lifted += c.store.lift_suppression(recipient, scope)
            continue
        result.suppressed += c.store.add_suppression(Suppression(recipient, scope, reason, at))


def _finish_reconciled(
    c: Container, written: dict[str, tuple[Delivery, list[str]]], before: dict[str, DeliveryStatus]
) -> None:
    """A delivery that left ``reconciling`` may have been its run's last open one."""
    if c.store.deferred_deliveries:
        return  # the run's finish task polls (services/runs.py)
    runs = {
        d.run_id
        for d, _ in written.values()
        if before.get(d.id) == DeliveryStatus.RECONCILING and d.status != before[d.id]
    }
    for run_id in runs:
        if not c.store.has_open_deliveries(run_id):
            c.queue.enqueue(finish_run_task(run_id))
