"""Deterministic ids (ARCHITECTURE.md decision 2).

Pub/Sub, Cloud Tasks and Cloud Scheduler deliver at least once, so everything that a
redelivery could create twice is keyed by a hash of what identifies it. Hashes are
hex, fixed-length and not monotonic, which also keeps Firestore writes spread out.
"""

from __future__ import annotations

import hashlib
from datetime import datetime


def _digest(*parts: str, length: int = 24) -> str:
    joined = "\x1f".join(parts).encode()
    return hashlib.sha256(joined).hexdigest()[:length]


def scheduled_run_id(report_id: str, slot: datetime) -> str:
    return "r" + _digest(report_id, "slot", slot.isoformat())


def event_run_id(report_id: str, source: str, event_id: str) -> str:
    return "r" + _digest(report_id, "event", source, event_id)


def manual_run_id(report_id: str, request_id: str) -> str:
    return "r" + _digest(report_id, "manual", request_id)


def delivery_id(run_id: str, channel: str, recipient: str) -> str:
    return "d" + _digest(run_id, channel, recipient.lower())


def task_name(kind: str, subject_id: str, attempt: int = 0) -> str:
    return f"{kind}-" + _digest(kind, subject_id, str(attempt), length=32)


def alert_id(*parts: str) -> str:
    return "a" + _digest(*parts)


def heartbeat_id(state: str, subject_id: str) -> str:
    """A ping's id; the "h" prefix keeps it among the notices, apart from the alerts people read."""
    return "h" + _digest("heartbeat", state, subject_id)


def notice_id(*parts: str) -> str:
    """Herald's own bookkeeping records kept beside alerts (incident pointers, slot markers)."""
    return "h" + _digest("notice", *parts)


def notification_collection(notification_id: str) -> str:
    """Where a notification record lives: ``notices`` (pings, watchdog bookkeeping) apart
    from the ``alerts`` people read."""
    return "notices" if notification_id.startswith("h") else "alerts"
