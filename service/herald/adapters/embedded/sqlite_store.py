"""The store port on SQLite (WAL), for the embedded backend.

Each record is kept as a JSON document (the same shape Firestore holds) plus the few
columns its queries need, indexed. Every conditional write runs in ``BEGIN IMMEDIATE``
so the read-check-write is atomic across threads and processes sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from herald.adapters.embedded.sqlite_db import SQLiteFile
from herald.domain.ids import notification_collection
from herald.domain.records import Alert, Delivery, Run
from herald.domain.reports import ReportDefinition
from herald.domain.states import (
    DELIVERY_CLAIMABLE,
    DELIVERY_OPEN,
    DeliveryStatus,
    RunStatus,
    delivery_sources,
    run_sources,
)
from herald.ports.store import AlertChange, DeliveryChange, EventsFold, Page, RunChange, StoredReport, Suppression

R = TypeVar("R", bound=BaseModel)
CHUNK = 500  # ids per IN (...) query: under SQLite's bound-parameter limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY, enabled INTEGER NOT NULL, next_fire_at TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_due ON reports (enabled, next_fire_at);
-- A definition's version, bumped by SQLite itself on every write of its doc (from any
-- process): a send reads this small row and takes the parsed definition from the cache
-- instead of reading (and hashing) a document that grows with the recipients (issue 14).
CREATE TABLE IF NOT EXISTS report_versions (id TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS report_version_on_insert AFTER INSERT ON reports BEGIN
    INSERT INTO report_versions (id, version) VALUES (NEW.id, 1)
    ON CONFLICT (id) DO UPDATE SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS report_version_on_update AFTER UPDATE OF doc ON reports BEGIN
    INSERT INTO report_versions (id, version) VALUES (NEW.id, 1)
    ON CONFLICT (id) DO UPDATE SET version = version + 1; END;
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, report_id TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_report ON runs (report_id, created_at, id);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at, id);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (created_at, id);
CREATE TABLE IF NOT EXISTS report_delivery_log (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL, report_id TEXT NOT NULL, status TEXT NOT NULL,
    recipient TEXT NOT NULL, created_at TEXT NOT NULL, link_token TEXT, message_id TEXT,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_by_run ON report_delivery_log (run_id, status);
CREATE INDEX IF NOT EXISTS deliveries_by_run_time ON report_delivery_log (run_id, created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_by_report ON report_delivery_log (report_id, created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_by_report_status ON report_delivery_log (report_id, status, created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_by_recipient ON report_delivery_log (recipient, created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_by_token ON report_delivery_log (link_token);
CREATE INDEX IF NOT EXISTS deliveries_by_message ON report_delivery_log (message_id);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, report_id TEXT, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (created_at);
CREATE TABLE IF NOT EXISTS notices (
    id TEXT PRIMARY KEY, report_id TEXT, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbound_events (
    kind TEXT NOT NULL, id TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS inbound_event_docs (
    kind TEXT NOT NULL, id TEXT NOT NULL, created_at TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS suppressions (
    recipient TEXT NOT NULL, scope TEXT NOT NULL, reason TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (recipient, scope));
CREATE TABLE IF NOT EXISTS job_status (
    job TEXT NOT NULL, period TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (job, period));
"""


def ts(value: datetime) -> str:
    """Fixed-width UTC text, so SQLite's text order is time order."""
    if value.tzinfo is None:
        raise ValueError("naive datetime reached the store")
    # isoformat is C and ~5x faster than strftime: every claim and outcome writes a few of these.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _from_ts(text: str | None) -> datetime | None:
    return _parse_ts(text) if text else None


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)  # what ts() wrote


class DefinitionCache:
    """Parsed definitions by their stored JSON.

    Every send reads its report; validating a definition with 10,000 recipients on
    each read made a run quadratic. Definitions are immutable, so the stored text is
    a safe key; the cache is small and bounded.
    """

    def __init__(self, size: int = 256) -> None:
        self._items: dict[str, ReportDefinition] = {}
        self._versions: dict[str, tuple[int, ReportDefinition]] = {}  # report id -> (version, parsed)
        self._size = size
        self._lock = threading.Lock()
        # One parse at a time: the threads whose first sends of a run miss together wait for
        # the first one's parse instead of each validating the same 10,000 recipients.
        self._parsing = threading.Lock()

    def by_version(self, report_id: str, version: int | None) -> ReportDefinition | None:
        if version is None:  # a row written before versions existed: read its document
            return None
        with self._lock:
            found = self._versions.get(report_id)
        return found[1] if found is not None and found[0] == version else None

    def remember(self, report_id: str, version: int | None, definition: ReportDefinition) -> None:
        if version is not None:
            with self._lock:
                if len(self._versions) >= self._size and report_id not in self._versions:
                    self._versions.pop(next(iter(self._versions)))
                self._versions[report_id] = (version, definition)

    def parse(self, doc: str) -> ReportDefinition:
        with self._lock:
            found = self._items.get(doc)
        if found is not None:
            return found
        with self._parsing:
            with self._lock:
                found = self._items.get(doc)
            if found is not None:  # parsed while this thread waited
                return found
            parsed = ReportDefinition.model_validate_json(doc)
            with self._lock:
                if len(self._items) >= self._size:
                    self._items.pop(next(iter(self._items)))
                self._items[doc] = parsed
        return parsed


def _applying(change: Callable[[R], dict[str, Any] | None]) -> Callable[[R], R | None]:
    """A port-level change (fields to set, or None) as a record-level one."""

    def apply(record: R) -> R | None:
        fields = change(record)
        return None if fields is None else record.model_copy(update=fields)

    return apply


def _cursor(*parts: str) -> str:
    return "|".join(parts)


class ClaimedDocuments:
    """The document this process last wrote for a delivery it claimed, by id.

    A send's outcome comes moments after its claim, in the same process: the outcome's
    compare-and-set starts from what the claim wrote instead of reading and parsing the row
    again (issue 14). Only a hint: the UPDATE still compares the stored document, so a row
    another writer changed meanwhile is read and decided again. Bounded, oldest out first."""

    def __init__(self, size: int = 1024) -> None:  # claims in flight: one per worker thread
        self._items: dict[str, tuple[str, Delivery]] = {}
        self._size = size
        self._lock = threading.Lock()

    def remember(self, delivery: Delivery, doc: str) -> None:
        with self._lock:
            self._items.pop(delivery.id, None)
            if len(self._items) >= self._size:
                self._items.pop(next(iter(self._items)))
            self._items[delivery.id] = (doc, delivery)

    def take(self, delivery_id: str) -> tuple[str, Delivery] | None:
        with self._lock:
            return self._items.pop(delivery_id, None)


class SQLiteStore:
    deferred_deliveries = False  # a delivery's row is written by the fan-out (the port's Store doc)

    def __init__(self, db: Path | SQLiteFile) -> None:
        """``db`` is a path, or the SQLiteFile the embedded queue shares (one transaction for both)."""
        self._db = db if isinstance(db, SQLiteFile) else SQLiteFile(Path(db))
        self._db.ensure(SCHEMA)
        self.path = self._db.path
        self._definitions = DefinitionCache()
        self._claimed = ClaimedDocuments()
        self._tuned = threading.local()  # per-connection pragmas set on first use

    # Connections ---------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.write()

    def close(self) -> None:
        self._db.close()

    # Reports -------------------------------------------------------------------------
    def save_report(self, definition: ReportDefinition, next_fire_at: datetime | None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO reports (id, enabled, next_fire_at, doc) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET enabled=excluded.enabled, next_fire_at=excluded.next_fire_at, "
                "doc=excluded.doc",
                (
                    definition.id,
                    int(definition.enabled),
                    ts(next_fire_at) if next_fire_at else None,
                    definition.model_dump_json(),
                ),
            )

    def _report(self, row: sqlite3.Row | tuple[Any, ...]) -> StoredReport:
        return StoredReport(self._definitions.parse(row[1]), _from_ts(row[0]))

    def get_report(self, report_id: str) -> StoredReport | None:
        conn = self._conn()
        head = conn.execute(
            "SELECT r.next_fire_at, v.version FROM reports r LEFT JOIN report_versions v ON v.id = r.id WHERE r.id=?",
            (report_id,),
        ).fetchone()
        if head is None:
            return None
        cached = self._definitions.by_version(report_id, head[1])
        if cached is not None:
            return StoredReport(cached, _from_ts(head[0]))
        row = conn.execute(
            "SELECT r.next_fire_at, r.doc, v.version FROM reports r LEFT JOIN report_versions v ON v.id = r.id "
            "WHERE r.id=?",
            (report_id,),
        ).fetchone()
        if row is None:
            return None
        stored = self._report(row)
        self._definitions.remember(report_id, row[2], stored.definition)
        return stored

    def list_reports(self) -> list[StoredReport]:
        rows = self._conn().execute("SELECT next_fire_at, doc FROM reports ORDER BY id").fetchall()
        return [self._report(row) for row in rows]

    def due_reports(self, now: datetime, limit: int) -> list[StoredReport]:
        rows = (
            self._conn()
            .execute(
                "SELECT next_fire_at, doc FROM reports WHERE enabled=1 AND next_fire_at IS NOT NULL "
                "AND next_fire_at <= ? ORDER BY next_fire_at, id LIMIT ?",
                (ts(now), limit),
            )
            .fetchall()
        )
        return [self._report(row) for row in rows]

    def advance_schedule(self, report_id: str, expected: datetime, next_fire_at: datetime | None) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE reports SET next_fire_at=? WHERE id=? AND next_fire_at=?",
                (ts(next_fire_at) if next_fire_at else None, report_id, ts(expected)),
            )
            return cur.rowcount == 1

    # Generic document helpers ----------------------------------------------------------
    def _get(self, table: str, model: type[R], record_id: str) -> R | None:
        row = self._conn().execute(f"SELECT doc FROM {table} WHERE id=?", (record_id,)).fetchone()  # noqa: S608
        return model.model_validate_json(row[0]) if row else None

    def _mutate(
        self,
        table: str,
        model: type[R],
        record_id: str,
        change: Callable[[R], R | None],
        columns: Callable[[R], dict[str, Any]],
        known: tuple[str, R] | None = None,
        written: Callable[[R, str], None] | None = None,
    ) -> R | None:
        """Read, let ``change`` decide (None = refuse), write back: one atomic step.

        Outside a caller's transaction it is a compare-and-set: read and decide without the
        write lock, then write only if the stored document is still the one decided on. The
        lock (every writer of every Herald process on this file waits for it) is then held
        for one UPDATE, not for two JSON round trips through pydantic (issue 14). A lost race
        decides again under the lock, so the outcome is the same as the locked path's.
        ``known``: the stored document as this process last wrote it, with its record (a
        hint that spares the read); ``written`` is told what the compare-and-set wrote."""
        if not self._db.in_write():
            hinted = known is not None
            if known is None:
                row = self._conn().execute(f"SELECT doc FROM {table} WHERE id=?", (record_id,)).fetchone()  # noqa: S608
                if row is None:
                    return None
                known = (row[0], model.model_validate_json(row[0]))
            stored, current = known
            updated = change(current)
            if updated is not None:
                cols = self._changed(columns, current, updated)
                with self._db.write(one_statement=True) as conn:
                    done = self._update(conn, table, record_id, cols, expected=stored)
                if done:
                    if written is not None:
                        written(updated, cols["doc"])
                    return updated
            elif not hinted:
                return None  # refused on a committed state: as the locked read would at that instant
            # else a hint refused: the row may have moved on since; decide on it under the lock
        with self._write() as conn:
            row = conn.execute(f"SELECT doc FROM {table} WHERE id=?", (record_id,)).fetchone()  # noqa: S608
            if row is None:
                return None
            current = model.model_validate_json(row[0])
            updated = change(current)
            if updated is None:
                return None
            self._update(conn, table, record_id, self._changed(columns, current, updated))
            return updated

    @staticmethod
    def _changed(columns: Callable[[R], dict[str, Any]], current: R, updated: R) -> dict[str, Any]:
        """The document and only the indexed columns whose value changed: SQLite rewrites
        every index on a column an UPDATE sets, changed or not, and each rewritten index
        adds pages to the commit (a claim sets the status alone, not the token or message id)."""
        before = columns(current)
        return {**{k: v for k, v in columns(updated).items() if before[k] != v}, "doc": updated.model_dump_json()}

    @staticmethod
    def _update(
        conn: sqlite3.Connection, table: str, record_id: str, cols: dict[str, Any], expected: str | None = None
    ) -> bool:
        assignments = ", ".join(f"{name}=?" for name in cols)
        if expected is None:
            conn.execute(f"UPDATE {table} SET {assignments} WHERE id=?", (*cols.values(), record_id))  # noqa: S608
            return True
        cur = conn.execute(
            f"UPDATE {table} SET {assignments} WHERE id=? AND doc=?",  # noqa: S608
            (*cols.values(), record_id, expected),
        )
        return cur.rowcount == 1

    # Runs ----------------------------------------------------------------------------
    @staticmethod
    def _run_columns(run: Run) -> dict[str, Any]:
        return {"status": str(run.status)}

    def create_run(self, run: Run) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO runs (id, report_id, status, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                (run.id, run.report_id, str(run.status), ts(run.created_at), run.model_dump_json()),
            )
            return cur.rowcount == 1

    def get_run(self, run_id: str) -> Run | None:
        return self._get("runs", Run, run_id)

    def transition_run(
        self, run_id: str, from_statuses: Iterable[RunStatus], to: RunStatus, **fields: Any
    ) -> Run | None:
        allowed = run_sources(from_statuses, to)

        def change(run: Run) -> Run | None:
            if run.status not in allowed:
                return None
            return run.model_copy(update={**fields, "status": to})

        return self._mutate("runs", Run, run_id, change, self._run_columns)

    def release_run_leases(self) -> int:
        """At start-up the previous process is gone: the run steps it had claimed are free."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE runs SET doc=json_set(doc, '$.lease_until', NULL) "
                "WHERE json_extract(doc, '$.lease_until') IS NOT NULL"
            ).rowcount

    def update_run(self, run_id: str, **fields: Any) -> Run | None:
        return self._mutate("runs", Run, run_id, lambda run: run.model_copy(update=fields), self._run_columns)

    def mutate_run(self, run_id: str, change: RunChange) -> Run | None:
        return self._mutate("runs", Run, run_id, _applying(change), self._run_columns)

    def list_runs(
        self,
        report_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        where, args = [], []
        if report_id is not None:
            where.append("report_id=?")
            args.append(report_id)
        if status is not None:
            where.append("status=?")
            args.append(str(status))
        if cursor:
            created, _, last_id = cursor.partition("|")
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [created, created, last_id]
        sql = "SELECT created_at, id, doc FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self._conn().execute(sql, (*args, limit + 1)).fetchall()
        items = [Run.model_validate_json(row[2]) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, _cursor(rows[limit - 1][0], rows[limit - 1][1]) if more else None)

    # Deliveries ----------------------------------------------------------------------
    @staticmethod
    def _delivery_columns(d: Delivery) -> dict[str, Any]:
        return {"status": str(d.status), "link_token": d.link_token, "message_id": d.provider_message_id}

    def create_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        rows = [
            (
                d.id,
                d.run_id,
                d.report_id,
                str(d.status),
                d.recipient.lower(),
                ts(d.created_at),
                d.link_token,
                d.provider_message_id,
                d.model_dump_json(),
            )
            for d in deliveries
        ]
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO report_delivery_log "
                "(id, run_id, report_id, status, recipient, created_at, link_token, message_id, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return conn.total_changes - before

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        return self._get("report_delivery_log", Delivery, delivery_id)

    def claim_delivery(
        self, delivery_id: str, now: datetime, lease_until: datetime, seed: Delivery | None = None
    ) -> Delivery | None:
        def change(d: Delivery) -> Delivery | None:
            if d.status not in DELIVERY_CLAIMABLE:
                return None
            if d.status == DeliveryStatus.SENDING and d.lease_until and d.lease_until > now:
                return None
            if d.status != DeliveryStatus.SENDING and d.next_attempt_at and d.next_attempt_at > now:
                return None
            return d.model_copy(
                update={
                    "status": DeliveryStatus.SENDING,
                    "attempts": d.attempts + 1,
                    "lease_until": lease_until,
                    "updated_at": now,
                }
            )

        return self._mutate(
            "report_delivery_log", Delivery, delivery_id, change, self._delivery_columns, written=self._claimed.remember
        )

    def transition_delivery(
        self, delivery_id: str, from_statuses: Iterable[DeliveryStatus], to: DeliveryStatus, **fields: Any
    ) -> Delivery | None:
        allowed = delivery_sources(from_statuses, to)

        def change(d: Delivery) -> Delivery | None:
            if d.status not in allowed:
                return None
            return d.model_copy(update={**fields, "status": to})

        known = self._claimed.take(delivery_id)  # a send's outcome: its claim's document
        return self._mutate("report_delivery_log", Delivery, delivery_id, change, self._delivery_columns, known)

    def update_delivery(self, delivery_id: str, **fields: Any) -> Delivery | None:
        return self._mutate(
            "report_delivery_log", Delivery, delivery_id, lambda d: d.model_copy(update=fields), self._delivery_columns
        )

    def mutate_delivery(self, delivery_id: str, change: DeliveryChange) -> Delivery | None:
        return self._mutate("report_delivery_log", Delivery, delivery_id, _applying(change), self._delivery_columns)

    def apply_delivery_events(
        self, kind: str, events: Mapping[str, Sequence[tuple[str, Any]]], now: datetime, fold: EventsFold
    ) -> dict[str, tuple[Delivery, list[str]]]:
        # The whole batch is one transaction: a read of the seen ids and of the deliveries,
        # then one executemany per table. Each delivery is written once however many events it has.
        event_ids = list(dict.fromkeys(eid for pairs in events.values() for eid, _ in pairs))
        stamp = ts(now)
        out: dict[str, tuple[Delivery, list[str]]] = {}
        if not getattr(self._tuned, "wal", False):
            # A batch dirties about one page per delivery; with SQLite's default autocheckpoint
            # (1,000 pages) every batch would end in a checkpoint and its fsync. A 10,000-page
            # WAL (~40 MB) copies a page that several batches change once (bench/webhook.py: +15-20%).
            self._db.conn().execute("PRAGMA wal_autocheckpoint=10000")
            self._tuned.wal = True
        with self._write() as conn:
            seen_sql = "SELECT id FROM inbound_events WHERE kind=? AND id IN ({})"
            seen = set(self._existing(conn, seen_sql, event_ids, kind))
            docs = dict(self._existing(conn, "SELECT id, doc FROM report_delivery_log WHERE id IN ({})", list(events)))
            remembered: list[tuple[str, str, str]] = []
            # Most events change only the document; leaving indexed columns out of the SET list
            # spares SQLite the index maintenance (it updates an index whenever its column is set).
            doc_only: list[tuple[str, str]] = []
            writes: list[tuple[Any, ...]] = []
            for delivery_id, pairs in events.items():
                doc = docs.get(delivery_id)
                if doc is None:
                    continue
                fresh = []
                for event_id, event in pairs:
                    if event_id not in seen:
                        seen.add(event_id)
                        fresh.append((event_id, event))
                delivery = Delivery.model_validate_json(doc)
                if fresh:
                    fields = fold(delivery, [event for _, event in fresh])
                    if fields:
                        before = self._delivery_columns(delivery)
                        delivery = delivery.model_copy(update=fields)
                        columns = self._delivery_columns(delivery)
                        if columns == before:
                            doc_only.append((delivery.model_dump_json(), delivery_id))
                        else:
                            writes.append((*columns.values(), delivery.model_dump_json(), delivery_id))
                    remembered += [(kind, event_id, stamp) for event_id, _ in fresh]
                out[delivery_id] = (delivery, [event_id for event_id, _ in fresh])
            conn.executemany("INSERT OR IGNORE INTO inbound_events (kind, id, created_at) VALUES (?, ?, ?)", remembered)
            conn.executemany("UPDATE report_delivery_log SET doc=? WHERE id=?", doc_only)
            conn.executemany(
                "UPDATE report_delivery_log SET status=?, link_token=?, message_id=?, doc=? WHERE id=?", writes
            )
        return out

    @staticmethod
    def _existing(conn: sqlite3.Connection, sql: str, ids: list[str], *first: str) -> list[Any]:
        rows: list[Any] = []
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            found = conn.execute(sql.format(",".join("?" * len(chunk))), (*first, *chunk)).fetchall()
            rows += [row[0] if len(row) == 1 else tuple(row) for row in found]
        return rows

    def list_deliveries(
        self,
        run_id: str | None = None,
        report_id: str | None = None,
        status: DeliveryStatus | None = None,
        recipient: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        where, args = [], []
        for column, value in (("run_id", run_id), ("report_id", report_id), ("status", status)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(str(value))
        if recipient is not None:
            where.append("recipient=?")
            args.append(recipient.lower())
        if cursor:
            created, _, last_id = cursor.partition("|")
            where.append("(created_at > ? OR (created_at = ? AND id > ?))")
            args += [created, created, last_id]
        sql = "SELECT created_at, id, doc FROM report_delivery_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id LIMIT ?"
        rows = self._conn().execute(sql, (*args, limit + 1)).fetchall()
        items = [Delivery.model_validate_json(row[2]) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, _cursor(rows[limit - 1][0], rows[limit - 1][1]) if more else None)

    def has_open_deliveries(self, run_id: str) -> bool:
        marks = ",".join("?" * len(DELIVERY_OPEN))
        row = (
            self._conn()
            .execute(
                f"SELECT 1 FROM report_delivery_log WHERE run_id=? AND status IN ({marks}) LIMIT 1",  # noqa: S608
                (run_id, *[str(s) for s in DELIVERY_OPEN]),
            )
            .fetchone()
        )
        return row is not None

    def delivery_counts(self, run_id: str) -> dict[str, int]:
        rows = (
            self._conn()
            .execute("SELECT status, COUNT(*) FROM report_delivery_log WHERE run_id=? GROUP BY status", (run_id,))
            .fetchall()
        )
        return {status: count for status, count in rows}

    # Alerts --------------------------------------------------------------------------
    def add_alert(self, alert: Alert) -> bool:
        table = notification_collection(alert.id)
        with self._write() as conn:
            cur = conn.execute(
                f"INSERT OR IGNORE INTO {table} (id, report_id, created_at, doc) VALUES (?, ?, ?, ?)",  # noqa: S608
                (alert.id, alert.report_id, ts(alert.created_at), alert.model_dump_json()),
            )
            return cur.rowcount == 1

    def get_alert(self, alert_id: str) -> Alert | None:
        return self._get(notification_collection(alert_id), Alert, alert_id)

    def mutate_alert(self, alert_id: str, change: AlertChange) -> Alert | None:
        return self._mutate(notification_collection(alert_id), Alert, alert_id, _applying(change), lambda a: {})

    def list_alerts(self, limit: int = 50, report_id: str | None = None) -> list[Alert]:
        if report_id is None:
            rows = (
                self._conn()
                .execute("SELECT doc FROM alerts ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
                .fetchall()
            )
        else:
            rows = (
                self._conn()
                .execute(
                    "SELECT doc FROM alerts WHERE report_id=? ORDER BY created_at DESC, id DESC LIMIT ?",
                    (report_id, limit),
                )
                .fetchall()
            )
        return [Alert.model_validate_json(row[0]) for row in rows]

    # Event de-duplication --------------------------------------------------------------
    def remember_events(self, kind: str, event_ids: Sequence[str], now: datetime) -> set[str]:
        new: set[str] = set()
        stamp = ts(now)
        with self._write() as conn:
            for event_id in dict.fromkeys(event_ids):
                cur = conn.execute(
                    "INSERT OR IGNORE INTO inbound_events (kind, id, created_at) VALUES (?, ?, ?)",
                    (kind, event_id, stamp),
                )
                if cur.rowcount == 1:
                    new.add(event_id)
        return new

    def get_inbound_event(self, kind: str, event_id: str) -> dict[str, Any] | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM inbound_event_docs WHERE kind=? AND id=?", (kind, event_id))
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def put_inbound_event(self, kind: str, event_id: str, doc: dict[str, Any], now: datetime) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO inbound_event_docs (kind, id, created_at, doc) VALUES (?, ?, ?, ?)",
                (kind, event_id, ts(now), json.dumps(doc, default=str)),
            )
            return cur.rowcount == 1

    # Suppressions ----------------------------------------------------------------------
    def add_suppression(self, suppression: Suppression) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO suppressions (recipient, scope, reason, created_at) VALUES (?, ?, ?, ?)",
                (suppression.recipient.lower(), suppression.scope, suppression.reason, ts(suppression.created_at)),
            )
            return cur.rowcount == 1

    def lift_suppression(self, recipient: str, scope: str) -> bool:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM suppressions WHERE recipient=? AND scope=?", (recipient.lower(), scope))
            return cur.rowcount == 1

    def find_suppression(self, recipient: str, report_id: str) -> Suppression | None:
        row = (
            self._conn()
            .execute(
                "SELECT recipient, scope, reason, created_at FROM suppressions WHERE recipient=? AND scope IN (?, '*') "
                "ORDER BY scope = '*' LIMIT 1",
                (recipient.lower(), report_id),
            )
            .fetchone()
        )
        return Suppression(row[0], row[1], row[2], _parse_ts(row[3])) if row else None

    def suppressed_among(self, recipients: Sequence[str], report_id: str) -> set[str]:
        lowered = list(dict.fromkeys(r.lower() for r in recipients))
        found: set[str] = set()
        for start in range(0, len(lowered), 500):  # stay under SQLite's bound-parameter limit
            chunk = lowered[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn().execute(
                f"SELECT recipient FROM suppressions WHERE scope IN (?, '*') AND recipient IN ({marks})",  # noqa: S608
                (report_id, *chunk),
            )
            found.update(row[0] for row in rows)
        return found

    def list_suppressions(self, limit: int = 100) -> list[Suppression]:
        rows = (
            self._conn()
            .execute(
                "SELECT recipient, scope, reason, created_at FROM suppressions ORDER BY created_at DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [Suppression(r[0], r[1], r[2], _parse_ts(r[3])) for r in rows]

    # Links and provider ids ----------------------------------------------------------------
    def get_delivery_by_token(self, token: str) -> Delivery | None:
        row = self._conn().execute("SELECT doc FROM report_delivery_log WHERE link_token=?", (token,)).fetchone()
        return Delivery.model_validate_json(row[0]) if row else None

    def find_delivery_by_message_id(self, message_id: str) -> Delivery | None:
        row = self._conn().execute("SELECT doc FROM report_delivery_log WHERE message_id=?", (message_id,)).fetchone()
        return Delivery.model_validate_json(row[0]) if row else None

    # Job status ----------------------------------------------------------------------
    def put_job_status(self, job: str, period: str, record: dict[str, Any]) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO job_status (job, period, doc) VALUES (?, ?, ?)",
                (job, period, json.dumps(record, default=str)),
            )
            return cur.rowcount == 1

    def get_job_status(self, job: str, period: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT doc FROM job_status WHERE job=? AND period=?", (job, period)).fetchone()
        return json.loads(row[0]) if row else None
