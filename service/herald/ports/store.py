"""The store port: definitions, runs, deliveries and alerts.

Every create is idempotent (returns False when the record already exists) and every
status change is a conditional write (returns None when another worker got there
first); both are normal outcomes, not errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from herald.domain.records import Alert, Delivery, Run
from herald.domain.reports import ReportDefinition
from herald.domain.states import DeliveryStatus, RunStatus


@dataclass(frozen=True)
class StoredReport:
    definition: ReportDefinition
    next_fire_at: datetime | None


@dataclass(frozen=True)
class Suppression:
    recipient: str  # lower-cased e-mail address
    scope: str  # a report id, or "*" for every report
    reason: str  # bounce, blocked, spamreport, unsubscribe, group_unsubscribe, manual
    created_at: datetime


# What a delivery change returns: the fields to set, or None to leave the delivery as it is.
# It may run more than once (a Firestore transaction is retried), so it must have no side effect.
DeliveryChange = Callable[[Delivery], dict[str, Any] | None]
RunChange = Callable[[Run], dict[str, Any] | None]
AlertChange = Callable[[Alert], dict[str, Any] | None]
# Folds a delivery's new provider events (in the order given) into the fields to set.
EventsFold = Callable[[Delivery, list[Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def pages(fetch: Callable[[str | None], Page]) -> Iterator[list[Any]]:
    """The items of every page of a cursor-paged listing, in order: ``fetch(cursor)`` gets one."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


class Store(Protocol):
    # True when ``create_deliveries`` only lists queued deliveries (Firestore's pages) and
    # a delivery's own record is made by its first claim or change: its send task then
    # carries the delivery as ``seed``, and the run's finish is polled, because finding
    # that none is open costs more than one read (services/runs.py).
    deferred_deliveries: bool

    # Reports -----------------------------------------------------------------
    def save_report(self, definition: ReportDefinition, next_fire_at: datetime | None) -> None: ...
    def get_report(self, report_id: str) -> StoredReport | None: ...
    def list_reports(self) -> list[StoredReport]: ...
    def due_reports(self, now: datetime, limit: int) -> list[StoredReport]:
        """Enabled reports whose next fire time is at or before ``now``, oldest first."""
        ...

    def advance_schedule(self, report_id: str, expected: datetime, next_fire_at: datetime | None) -> bool:
        """Move next_fire_at from ``expected`` to ``next_fire_at``; False if it had moved."""
        ...

    # Runs ----------------------------------------------------------------------
    def create_run(self, run: Run) -> bool: ...
    def get_run(self, run_id: str) -> Run | None: ...
    def transition_run(
        self, run_id: str, from_statuses: Iterable[RunStatus], to: RunStatus, **fields: Any
    ) -> Run | None:
        """Set status ``to`` (and fields) if the status is one of ``from_statuses``."""
        ...

    def update_run(self, run_id: str, **fields: Any) -> Run | None: ...
    def mutate_run(self, run_id: str, change: RunChange) -> Run | None:
        """Atomic read-change-write of a run (claims of its steps); like ``mutate_delivery``."""
        ...

    def list_runs(
        self,
        report_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Runs, newest first (created_at, then id, descending); ``cursor`` is opaque.

        Paging with ``next_cursor`` until it is None returns every matching run exactly once
        (records created meanwhile may or may not appear). Cursors are backend-specific."""
        ...

    # Deliveries ----------------------------------------------------------------
    def create_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Create those that do not exist yet; return how many were created."""
        ...

    def get_delivery(self, delivery_id: str) -> Delivery | None: ...
    def claim_delivery(
        self, delivery_id: str, now: datetime, lease_until: datetime, seed: Delivery | None = None
    ) -> Delivery | None:
        """Take a delivery for sending: queued/retrying (when due) or sending with an expired lease.

        ``seed``: the delivery as the fan-out created it, carried by its first send task; a
        store with ``deferred_deliveries`` creates the record from it (no read). Ignored
        otherwise, and whenever the record exists already.

        Due: ``next_attempt_at`` is None or <= ``now``; expired: ``lease_until`` is None or
        <= ``now``. The claim sets status sending, ``lease_until`` and ``updated_at = now``
        and increments ``attempts``; None means not claimable now (or no such delivery).
        Atomic: of concurrent claims, exactly one wins.
        """
        ...

    def transition_delivery(
        self, delivery_id: str, from_statuses: Iterable[DeliveryStatus], to: DeliveryStatus, **fields: Any
    ) -> Delivery | None: ...
    def update_delivery(self, delivery_id: str, **fields: Any) -> Delivery | None: ...
    def mutate_delivery(self, delivery_id: str, change: DeliveryChange) -> Delivery | None:
        """Atomic read-change-write: ``change`` sees the current delivery and returns the fields
        to set. None (no such delivery, or ``change`` said None) writes nothing. Counters and
        rate limits use it instead of get + update, which loses concurrent updates."""
        ...

    def apply_delivery_events(
        self, kind: str, events: Mapping[str, Sequence[tuple[str, Any]]], now: datetime, fold: EventsFold
    ) -> dict[str, tuple[Delivery, list[str]]]:
        """Apply provider events to deliveries, each event to its delivery exactly once.

        ``events`` maps a delivery id to its ``(event id, event)`` pairs. Per delivery, the
        pairs whose event id (of ``kind``) was not applied to that delivery before, nor
        earlier in the batch, go to ``fold`` in the order given; the fields it returns are
        written and those event ids recorded as applied in one atomic step, so a crash can
        neither lose an event nor apply it twice. Returns, for every delivery that exists,
        (the delivery as written, the new event ids); events of deliveries that do not exist
        are neither applied nor recorded.

        De-duplication is kept per delivery (a provider's event id belongs to one delivery)
        and apart from ``remember_events``: whether one sees the other's ids is the store's
        business (SQLite shares one table per kind, Firestore keeps the ids on the delivery
        document), and no caller may rely on it. A store may bound the ids it keeps per
        delivery (Firestore: the newest SEEN_EVENTS_CAP, see firestore_docs.py).
        """
        ...

    def list_deliveries(
        self,
        run_id: str | None = None,
        report_id: str | None = None,
        status: DeliveryStatus | None = None,
        recipient: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Deliveries, oldest first (created_at, then id, ascending); ``recipient`` is exact, case-insensitive."""
        ...

    def has_open_deliveries(self, run_id: str) -> bool: ...
    def delivery_counts(self, run_id: str) -> dict[str, int]: ...

    # Alerts --------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> bool: ...
    def get_alert(self, alert_id: str) -> Alert | None: ...
    def mutate_alert(self, alert_id: str, change: AlertChange) -> Alert | None:
        """Atomic read-change-write of an alert: a channel's claim, its outcome, its release."""
        ...

    def list_alerts(self, limit: int = 50, report_id: str | None = None) -> list[Alert]:
        """Alerts, newest first."""
        ...

    # Provider / trigger events: de-duplication -----------------------------------
    def remember_events(self, kind: str, event_ids: Sequence[str], now: datetime) -> set[str]:
        """Record event ids of ``kind``; return the ids that had not been seen before."""
        ...

    def get_inbound_event(self, kind: str, event_id: str) -> dict[str, Any] | None:
        """The document kept for a trigger event (its digest and the runs it started)."""
        ...

    def put_inbound_event(self, kind: str, event_id: str, doc: dict[str, Any], now: datetime) -> bool:
        """Keep ``doc`` for (kind, event id) unless one is kept already (then False, unchanged)."""
        ...

    # Suppressions --------------------------------------------------------------
    def add_suppression(self, suppression: Suppression) -> bool: ...
    def lift_suppression(self, recipient: str, scope: str) -> bool: ...
    def find_suppression(self, recipient: str, report_id: str) -> Suppression | None:
        """A suppression for this report or a global one ("*")."""
        ...

    def suppressed_among(self, recipients: Sequence[str], report_id: str) -> set[str]:
        """The lower-cased recipients with a suppression for this report or a global one.

        One call per fan-out instead of one lookup per recipient.
        """
        ...

    def list_suppressions(self, limit: int = 100) -> list[Suppression]: ...

    # Tracked links -------------------------------------------------------------
    def get_delivery_by_token(self, token: str) -> Delivery | None: ...
    def find_delivery_by_message_id(self, message_id: str) -> Delivery | None: ...

    # Upstream job completion records (job_status) --------------------------------
    def put_job_status(self, job: str, period: str, record: dict[str, Any]) -> bool:
        """Store a completion record; False when one for (job, period) already existed."""
        ...

    def get_job_status(self, job: str, period: str) -> dict[str, Any] | None: ...
