"""Record <-> Firestore document conversion, document keys, cursors and op counters.

Datetimes are stored as Firestore timestamps (aware UTC, microsecond precision) so that
range queries and TTL policies work on them; the client hands them back as its own
``DatetimeWithNanoseconds``, which is turned into a plain aware ``datetime`` here so a
record read back equals the record written.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

R = TypeVar("R", bound=BaseModel)


# A delivery's provider events are de-duplicated on the delivery document itself (issue 14):
# the ids already applied (``key(kind, event id)``), newest last, capped. A batch of SendGrid
# events then costs one read and one write per delivery it touches, instead of a read and a
# create of one ``inbound_events`` document per event; these ids are not seen by
# ``remember_events`` (the store port does not ask it). A delivery has a handful of events
# (processed, delivered, a few opens and clicks); past the cap the oldest ids drop out, and
# a replay of one of those (SendGrid retries a batch for up to 24 hours; a delivery rarely
# sees 200 events) would be applied again: its status and first-seen times would not move
# (they only move forward / keep the first), but the open, click and deferral counters and
# the event history would count it twice. Deliveries stored without the field (before it
# existed) keep using the ``inbound_events`` documents.
SEEN_EVENTS_FIELD = "seen_event_ids"
SEEN_EVENTS_CAP = 200


def key(*parts: str) -> str:
    """A document id for a composite key: fixed-length hex, never monotonic."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def encode(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the store")
        return value.astimezone(UTC)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)
        return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def to_doc(record: BaseModel) -> dict[str, Any]:
    return encode(record.model_dump(mode="python"))  # type: ignore[no-any-return]


def from_doc(model: type[R], data: dict[str, Any]) -> R:
    return model.model_validate(decode(data))


def fields_doc(model: type[BaseModel], record: BaseModel, names: set[str]) -> dict[str, Any]:
    """The stored values of ``names`` (top-level fields of ``record``), for an update."""
    unknown = names - set(model.model_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {', '.join(sorted(unknown))}")
    dumped = record.model_dump(mode="python", include=names)
    return {name: encode(dumped[name]) for name in names}


def make_cursor(created_at: datetime, doc_id: str) -> str:
    return f"{created_at.astimezone(UTC).isoformat()}|{doc_id}"


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    stamp, sep, doc_id = cursor.partition("|")
    try:
        created = datetime.fromisoformat(stamp)
    except ValueError:
        created = None
    if not sep or not doc_id or created is None or created.tzinfo is None:
        raise ValueError(f"malformed cursor {cursor!r}")
    return created, doc_id


@dataclass
class OpCounts:
    """Billable Firestore operations as Google counts them (firestore/pricing):

    - reads: one per document returned by a get or query; a query that returns nothing
      still costs one; a count() aggregation costs one per 1,000 index entries matched
      (minimum one); a get of a missing document costs one.
    - writes: one per document created / set / updated (failed creates, and updates whose
      precondition failed, are ``conflicts``).
    - deletes: one per document deleted.
    - queries: how many queries (and aggregations) ran; latency, not billing.
    """

    reads: int = 0
    writes: int = 0
    deletes: int = 0
    conflicts: int = 0
    queries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self,
        *,
        reads: int = 0,
        writes: int = 0,
        deletes: int = 0,
        conflicts: int = 0,
        queries: int = 0,
    ) -> None:
        with self._lock:
            self.reads += reads
            self.writes += writes
            self.deletes += deletes
            self.conflicts += conflicts
            self.queries += queries

    def query_read(self, returned: int) -> None:
        self.add(reads=max(1, returned), queries=1)

    def count_read(self, matched: int) -> None:
        self.add(reads=max(1, math.ceil(matched / 1000)), queries=1)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {
                "reads": self.reads,
                "writes": self.writes,
                "deletes": self.deletes,
                "conflicts": self.conflicts,
                "queries": self.queries,
            }

    def reset(self) -> None:
        with self._lock:
            self.reads = self.writes = self.deletes = self.conflicts = self.queries = 0
