"""The store port on Firestore (Native mode), for the gcp backend.

- Creates are ``document.create()``: ``AlreadyExists`` is the normal "it was there"
  answer, so redelivered ticks, tasks and pushes create nothing twice.
- Every conditional write of one document (CAS, claim, ``mutate_*``) is optimistic:
  read it, let a pure change function decide, update it with the precondition "last
  updated at the time I read" (``write_option(last_update_time=...)``); a
  ``FailedPrecondition`` (someone wrote in between) re-reads and decides again, so the
  change may run several times and nothing with a side effect happens inside it. The
  store remembers, per instance, the documents it last wrote itself (update time and
  record, bounded): the next change of one of those decides on that copy and writes with
  its time as the precondition, 0 reads when nobody wrote in between; otherwise (or when
  the change refuses the copy) it reads. A first claim creates the delivery's document
  from the seed its task carries (firestore_pages.py): 1 write, no read; the outcome
  after it 1 write. Batches of events and the schedule CAS stay transactions.
- Every query is bounded by the work it serves (due reports, one run's deliveries, a
  page); the composite indexes they need are declared in ``firestore_indexes.json``
  next to this file, which Terraform reads.
- Document ids are the domain's deterministic ids, or a hash of a composite key
  (``firestore_docs.key``): spread out, never monotonic.
- De-duplication and history documents carry ``expire_at``, the TTL field of their
  collection (see ``fieldOverrides`` in the index file).

Collection names are the contract between backends: ``reports``, ``runs``,
``report_delivery_log``, ``job_status``, ``suppressions``, ``alerts``, ``notices``, ``inbound_events``,
``delivery_pages``.
``prefix`` is prepended to each (e.g. one Firestore database shared by test runs).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath
from pydantic import BaseModel

from herald.adapters.gcp.firestore_docs import (
    SEEN_EVENTS_CAP,
    SEEN_EVENTS_FIELD,
    OpCounts,
    decode,
    encode,
    fields_doc,
    from_doc,
    key,
    make_cursor,
    parse_cursor,
    to_doc,
)
from herald.adapters.gcp.firestore_pages import PAGES, DeliveryPages, Key, key_of
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
T = TypeVar("T")
U = TypeVar("U")

BATCH_LIMIT = 500  # writes per commit (https://firebase.google.com/docs/firestore/manage-data/transactions)
NAME = FieldPath.document_id()  # "__name__"
# A change function returns the new record and the names of the fields it changed.
Change = Callable[[R], tuple[R, set[str]] | None]
# Documents remembered per store as last written by it (_mutate). A send task's claim and
# outcome are a few milliseconds to seconds apart and a worker runs tens of them at once.
WRITTEN_CACHE_SIZE = 1024
MUTATE_ATTEMPTS = 8  # reads (and decisions) per conditional write before giving up: contention
# A precondition write is sent with retry=None: a blind resend of one that landed would fail
# its precondition and be decided again (a counter bumped twice). _mutate retries it itself
# and recognises its own write by the tokens in WRITE_IDS_FIELD.
# Errors after which the write may or may not have landed (the answer was lost):
UNHEARD = (
    gexc.ServiceUnavailable,
    gexc.ResourceExhausted,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Unknown,
)
# Errors that say the write was not applied: decide again on a fresh read.
NOT_APPLIED = (gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted)
DELIVERIES = "report_delivery_log"
WRITE_IDS_FIELD = "write_ids"  # the last WRITE_IDS_KEPT write tokens (not a record field)
WRITE_IDS_KEPT = 8  # another writer's tokens push ours out only after this many writes
TRANSIENT_BUDGET_SECONDS = 30.0  # how long unheard writes are retried before the error is raised


class FirestoreStore:
    def __init__(
        self,
        client: firestore.Client,
        prefix: str = "",
        *,
        event_retention: timedelta = timedelta(days=30),
        history_retention: timedelta | None = timedelta(days=400),
        pool_size: int = 16,
        written_cache_size: int = WRITTEN_CACHE_SIZE,
        deferred_deliveries: bool = True,
    ) -> None:
        self._client = client
        # Deliveries wait in pages until their first claim (firestore_pages.py); the run's
        # finish is then polled (services/runs.py), not looked for after every delivery.
        self.deferred_deliveries = deferred_deliveries
        self._prefix = prefix
        self._event_retention = event_retention
        self._history_retention = history_retention
        self._pool_size = pool_size
        self.op_counts = OpCounts()
        # (collection, id) -> (update time, record, write tokens) of documents this store last wrote itself.
        self._written: OrderedDict[tuple[str, str], tuple[datetime, BaseModel, list[str]]] = OrderedDict()
        self._written_size = written_cache_size
        self._written_lock = threading.Lock()
        self._pages = DeliveryPages(
            client,
            lambda: self._col(PAGES),
            lambda: self._col(DELIVERIES),
            self.op_counts,
            self._expire,
            lambda query: self._query(query),
        )

    # Plumbing ------------------------------------------------------------------------
    def _col(self, name: str) -> firestore.CollectionReference:
        return self._client.collection(self._prefix + name)

    def _expire(self, created_at: datetime) -> dict[str, Any]:
        return {"expire_at": encode(created_at + self._history_retention)} if self._history_retention else {}

    def _parallel(self, fn: Callable[[T], U], items: Sequence[T]) -> list[U]:
        """Independent RPCs side by side (bounded pool); a pool only when it helps."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self._pool_size, len(items))) as pool:
            return list(pool.map(fn, items))

    def _create(self, ref: firestore.DocumentReference, data: dict[str, Any]) -> bool:
        try:
            ref.create(data)
        except gexc.AlreadyExists:
            self.op_counts.add(conflicts=1)
            return False
        self.op_counts.add(writes=1)
        return True

    def _get(self, ref: firestore.DocumentReference) -> dict[str, Any] | None:
        snapshot = ref.get()
        self.op_counts.add(reads=1)
        return snapshot.to_dict() if snapshot.exists else None

    def _query(self, query: firestore.Query) -> list[firestore.DocumentSnapshot[Any]]:
        snapshots = list(query.stream())
        self.op_counts.query_read(len(snapshots))
        return snapshots

    # Conditional writes: optimistic, with the update time as the precondition -------------
    def _remembered(self, slot: tuple[str, str], model: type[R]) -> tuple[datetime, R, list[str]] | None:
        with self._written_lock:
            entry = self._written.get(slot)
            if entry is None:
                return None
            self._written.move_to_end(slot)
        update_time, record, tokens = entry
        # Change functions are pure (the Change contract): they never modify the record they get.
        return (update_time, record, tokens) if isinstance(record, model) else None

    def _remember(
        self, slot: tuple[str, str], update_time: datetime, model: type[R], record: R, tokens: list[str]
    ) -> None:
        # Kept as a read would return it (Firestore turns tuples into lists, offsets into
        # UTC), and apart from ``record``, which the caller gets and may change. Copied
        # outside the lock: an alert body can be long.
        copy = from_doc(model, to_doc(record))
        with self._written_lock:
            self._written[slot] = (update_time, copy, tokens)
            self._written.move_to_end(slot)
            while len(self._written) > self._written_size:
                self._written.popitem(last=False)

    def _forget(self, slot: tuple[str, str]) -> None:
        with self._written_lock:
            self._written.pop(slot, None)

    def _write_if_unchanged(
        self,
        ref: firestore.DocumentReference,
        model: type[R],
        updated: R,
        names: set[str],
        since: datetime,
        tokens: list[str],
    ) -> datetime | None:
        """Update ``names`` if the document was last updated at ``since``: its new update
        time, or None if the write was not applied (counted as a conflict). ``tokens`` are
        the write tokens to store, this write's last. Raises UNHEARD errors."""
        data = fields_doc(model, updated, names)
        if "recipient" in names:
            data["recipient_lc"] = str(data["recipient"]).lower()
        data[WRITE_IDS_FIELD] = tokens
        try:
            result = ref.update(data, option=self._client.write_option(last_update_time=since), retry=None)
        except NOT_APPLIED:
            self.op_counts.add(conflicts=1)
            return None
        self.op_counts.add(writes=1)
        new_time: datetime = result.update_time
        return new_time

    def _mutate(
        self, collection: str, model: type[R], doc_id: str, change: Change[R], unheard: set[str] | None = None
    ) -> R | None:
        """Let ``change`` decide (None = refuse) on the current document and write what it
        decided only if the document is still the one it decided on (see the module doc).
        ``unheard``: tokens of the caller's writes whose outcome it did not hear."""
        ref = self._col(collection).document(doc_id)
        slot = (collection, doc_id)
        unheard = set(unheard or ())  # tokens of writes sent whose outcome was not heard
        last_unheard: Exception | None = None
        deadline = time.monotonic() + TRANSIENT_BUDGET_SECONDS
        remembered = self._remembered(slot, model)
        if remembered is not None:  # written by this store: decide on that copy, 0 reads
            since, record, known = remembered
            decided = change(record)
            # A refusal, or a change that writes nothing, is never answered from a copy
            # that may be stale: those read the document below.
            if decided is not None and decided[1]:
                updated, names = decided
                tokens = [*known, uuid.uuid4().hex][-WRITE_IDS_KEPT:]
                try:
                    new_time = self._write_if_unchanged(ref, model, updated, names, since, tokens)
                except UNHEARD as exc:
                    unheard.add(tokens[-1])  # did it land? The read below tells, by the token
                    last_unheard, new_time = exc, None
                if new_time is not None:
                    self._remember(slot, new_time, model, updated, tokens)
                    return updated
            self._forget(slot)  # changed since (an event webhook, another worker), or refused

        attempt = 0
        materialized = False
        while True:
            snapshot = ref.get()
            self.op_counts.add(reads=1)
            if not snapshot.exists:
                self._forget(slot)
                if collection == DELIVERIES and not materialized and self._materialize(doc_id):
                    materialized = True  # a delivery waiting in its page: decide on its document now
                    continue
                return None
            data = snapshot.to_dict() or {}
            record = from_doc(model, data)
            known = [str(t) for t in data.get(WRITE_IDS_FIELD) or []]
            if unheard & set(known):  # an earlier attempt of this call landed
                self.op_counts.add(writes=1)
                self._remember(slot, snapshot.update_time, model, record, known)
                return record
            decided = change(record)
            if decided is None:
                self._forget(slot)
                return None
            updated, names = decided
            if not names:
                return updated
            tokens = [*known, uuid.uuid4().hex][-WRITE_IDS_KEPT:]
            try:
                new_time = self._write_if_unchanged(ref, model, updated, names, snapshot.update_time, tokens)
            except UNHEARD as exc:
                unheard.add(tokens[-1])
                last_unheard, new_time = exc, None
                if time.monotonic() > deadline:
                    raise
            else:
                if new_time is None:  # contended: another writer got there first
                    attempt += 1
                    if attempt >= MUTATE_ATTEMPTS:
                        raise gexc.Aborted(  # type: ignore[no-untyped-call]
                            f"{collection}/{doc_id}: still contended after {MUTATE_ATTEMPTS} attempts"
                        ) from last_unheard
            if new_time is not None:
                self._remember(slot, new_time, model, updated, tokens)
                return updated
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** min(attempt + len(unheard), 7))))  # back off, jittered

    @staticmethod
    def _updating(fields: dict[str, Any], **more: Any) -> Callable[[R], tuple[R, set[str]]]:
        def change(record: R) -> tuple[R, set[str]]:
            update = {**fields, **more}
            return record.model_copy(update=update), set(update)

        return change

    # Reports -------------------------------------------------------------------------
    def save_report(self, definition: ReportDefinition, next_fire_at: datetime | None) -> None:
        # The definition is kept as JSON text: Firestore refuses arrays inside arrays,
        # which a table source's rows are. The fields queries need sit beside it.
        doc = {
            "name": definition.name,
            "owner": definition.owner,
            "enabled": definition.enabled,
            "next_fire_at": encode(next_fire_at),
            "definition_json": definition.model_dump_json(),
        }
        self._col("reports").document(definition.id).set(doc)
        self.op_counts.add(writes=1)

    @staticmethod
    def _report(data: dict[str, Any]) -> StoredReport:
        definition = ReportDefinition.model_validate_json(data["definition_json"])
        return StoredReport(definition, decode(data.get("next_fire_at")))

    def get_report(self, report_id: str) -> StoredReport | None:
        data = self._get(self._col("reports").document(report_id))
        return self._report(data) if data else None

    def list_reports(self) -> list[StoredReport]:
        return [self._report(s.to_dict() or {}) for s in self._query(self._col("reports").order_by(NAME))]

    def due_reports(self, now: datetime, limit: int) -> list[StoredReport]:
        query = (
            self._col("reports")
            .where(filter=FieldFilter("enabled", "==", True))
            .where(filter=FieldFilter("next_fire_at", "<=", encode(now)))
            .order_by("next_fire_at")
            .order_by(NAME)
            .limit(limit)
        )
        return [self._report(s.to_dict() or {}) for s in self._query(query)]

    def advance_schedule(self, report_id: str, expected: datetime, next_fire_at: datetime | None) -> bool:
        ref = self._col("reports").document(report_id)

        def body(transaction: firestore.Transaction) -> bool:
            snapshot = ref.get(transaction=transaction)
            self.op_counts.add(reads=1)
            if not snapshot.exists or decode((snapshot.to_dict() or {}).get("next_fire_at")) != expected:
                return False
            transaction.update(ref, {"next_fire_at": encode(next_fire_at)})
            return True

        moved: bool = firestore.transactional(body)(self._client.transaction())
        if moved:
            self.op_counts.add(writes=1)
        return moved

    # Runs ----------------------------------------------------------------------------
    def create_run(self, run: Run) -> bool:
        return self._create(self._col("runs").document(run.id), {**to_doc(run), **self._expire(run.created_at)})

    def get_run(self, run_id: str) -> Run | None:
        data = self._get(self._col("runs").document(run_id))
        return from_doc(Run, data) if data else None

    def transition_run(
        self, run_id: str, from_statuses: Iterable[RunStatus], to: RunStatus, **fields: Any
    ) -> Run | None:
        allowed = run_sources(from_statuses, to)
        update = self._updating(fields, status=to)
        return self._mutate("runs", Run, run_id, lambda run: update(run) if run.status in allowed else None)

    def update_run(self, run_id: str, **fields: Any) -> Run | None:
        return self._mutate("runs", Run, run_id, self._updating(fields))

    def mutate_run(self, run_id: str, change: RunChange) -> Run | None:
        return self._mutate("runs", Run, run_id, self._deciding(change))

    def _window(
        self, query: firestore.Query, model: type[R], limit: int, cursor: str | None, descending: bool
    ) -> list[R]:
        """Up to ``limit`` records after ``cursor``, in (created_at, id) order."""
        direction = firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING
        query = query.order_by("created_at", direction=direction).order_by(NAME, direction=direction)
        if cursor:
            created_at, doc_id = parse_cursor(cursor)
            query = query.start_after({"created_at": encode(created_at), "__name__": doc_id})
        return [from_doc(model, s.to_dict() or {}) for s in self._query(query.limit(limit))]

    def _page(self, query: firestore.Query, model: type[R], limit: int, cursor: str | None, descending: bool) -> Page:
        fetched = self._window(query, model, limit + 1, cursor, descending)
        items = fetched[:limit]
        more = len(fetched) > limit
        return Page(items, make_cursor(items[-1].created_at, items[-1].id) if more else None)  # type: ignore[attr-defined]

    def list_runs(
        self,
        report_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        query: firestore.Query = self._col("runs")  # type: ignore[assignment]
        if report_id is not None:
            query = query.where(filter=FieldFilter("report_id", "==", report_id))
        if status is not None:
            query = query.where(filter=FieldFilter("status", "==", str(status)))
        return self._page(query, Run, limit, cursor, descending=True)

    # Deliveries ----------------------------------------------------------------------
    def _delivery_doc(self, d: Delivery) -> dict[str, Any]:
        return {
            **to_doc(d),
            "recipient_lc": d.recipient.lower(),
            SEEN_EVENTS_FIELD: [],  # the provider events applied to it (firestore_docs.py)
            **self._expire(d.created_at),
        }

    def create_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        unique = list({d.id: d for d in deliveries}.values())
        if not self.deferred_deliveries:
            return self._create_documents(unique)
        by_run: dict[str, list[Delivery]] = {}
        for d in unique:
            by_run.setdefault(d.run_id, []).append(d)
        created = 0
        for run_id, items in by_run.items():
            listed = self._pages.paged_ids(run_id)
            fresh = [d for d in items if d.id not in listed]
            # A delivery that waits for no send (suppressed) gets its document now, before the
            # page lists it: an entry without a document is then always a queued one.
            self._create_documents([d for d in fresh if d.status != DeliveryStatus.QUEUED])
            pages = self._pages.page_docs(run_id, fresh)
            created += sum(self._parallel(lambda page: int(page[1]["n"]) if self._create(*page) else 0, pages))
        return created

    def _create_documents(self, deliveries: list[Delivery]) -> int:
        chunks = [deliveries[i : i + BATCH_LIMIT] for i in range(0, len(deliveries), BATCH_LIMIT)]
        return sum(self._parallel(self._create_chunk, chunks))

    def _materialize(self, delivery_id: str) -> bool:
        """Create the document of a delivery waiting in its page; False if no page lists it."""
        waiting = self._pages.find(delivery_id)
        if waiting is None:
            return False
        self._create(self._col(DELIVERIES).document(delivery_id), self._delivery_doc(waiting))
        return True  # created here, or by a concurrent claim: either way it exists now

    def _create_chunk(self, chunk: list[Delivery]) -> int:
        """One atomic batch of creates; if any exists, keep only the missing and retry."""
        col = self._col(DELIVERIES)
        pending = chunk
        for _ in range(3):
            batch = self._client.batch()
            for d in pending:
                batch.create(col.document(d.id), self._delivery_doc(d))
            try:
                batch.commit()
            except gexc.AlreadyExists:
                snapshots = list(self._client.get_all([col.document(d.id) for d in pending]))
                self.op_counts.add(reads=len(pending), conflicts=1)
                existing = {s.id for s in snapshots if s.exists}
                pending = [d for d in pending if d.id not in existing]
                if not pending:
                    return 0
                continue
            self.op_counts.add(writes=len(pending))
            return len(pending)
        # Still racing another fan-out of the same run: settle it document by document.
        return sum(self._create(col.document(d.id), self._delivery_doc(d)) for d in pending)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        data = self._get(self._col(DELIVERIES).document(delivery_id))
        if data:
            return from_doc(Delivery, data)
        return self._pages.find(delivery_id) if self.deferred_deliveries else None

    def claim_delivery(
        self, delivery_id: str, now: datetime, lease_until: datetime, seed: Delivery | None = None
    ) -> Delivery | None:
        unheard: set[str] = set()
        if (
            self.deferred_deliveries
            and seed is not None
            and seed.id == delivery_id
            and seed.status == DeliveryStatus.QUEUED
        ):
            # The first claim creates the document from the page entry its task carries:
            # 1 write, 0 reads. Exists already (a redelivered task, a concurrent claim, an
            # event or resend since): decide on the document like any other claim.
            update = {"status": DeliveryStatus.SENDING, "attempts": seed.attempts + 1, "lease_until": lease_until}
            claimed = seed.model_copy(update={**update, "updated_at": now})
            token = uuid.uuid4().hex
            ref = self._col(DELIVERIES).document(delivery_id)
            try:
                result = ref.create({**self._delivery_doc(claimed), WRITE_IDS_FIELD: [token]}, retry=None)
            except gexc.AlreadyExists:
                self.op_counts.add(conflicts=1)
            except UNHEARD:
                unheard.add(token)  # did it land? _mutate's read tells, by the token
            else:
                self.op_counts.add(writes=1)
                self._remember((DELIVERIES, delivery_id), result.update_time, Delivery, claimed, [token])
                return claimed

        def change(d: Delivery) -> tuple[Delivery, set[str]] | None:
            if d.status not in DELIVERY_CLAIMABLE:
                return None
            if d.status == DeliveryStatus.SENDING and d.lease_until and d.lease_until > now:
                return None
            if d.status != DeliveryStatus.SENDING and d.next_attempt_at and d.next_attempt_at > now:
                return None
            update = {
                "status": DeliveryStatus.SENDING,
                "attempts": d.attempts + 1,
                "lease_until": lease_until,
                "updated_at": now,
            }
            return d.model_copy(update=update), set(update)

        return self._mutate(DELIVERIES, Delivery, delivery_id, change, unheard)

    def transition_delivery(
        self, delivery_id: str, from_statuses: Iterable[DeliveryStatus], to: DeliveryStatus, **fields: Any
    ) -> Delivery | None:
        allowed = delivery_sources(from_statuses, to)
        update = self._updating(fields, status=to)
        return self._mutate(DELIVERIES, Delivery, delivery_id, lambda d: update(d) if d.status in allowed else None)

    def update_delivery(self, delivery_id: str, **fields: Any) -> Delivery | None:
        return self._mutate(DELIVERIES, Delivery, delivery_id, self._updating(fields))

    @staticmethod
    def _deciding(change: Callable[[R], dict[str, Any] | None]) -> Change[R]:
        """A port-level change (fields to set, or None) as this store's (record, changed names)."""

        def decide(record: R) -> tuple[R, set[str]] | None:
            fields = change(record)  # pure: a contended transaction runs it again
            return None if fields is None else (record.model_copy(update=fields), set(fields))

        return decide

    def mutate_delivery(self, delivery_id: str, change: DeliveryChange) -> Delivery | None:
        return self._mutate(DELIVERIES, Delivery, delivery_id, self._deciding(change))

    def apply_delivery_events(
        self, kind: str, events: Mapping[str, Sequence[tuple[str, Any]]], now: datetime, fold: EventsFold
    ) -> dict[str, tuple[Delivery, list[str]]]:
        # One transaction per delivery (side by side): it reads the delivery, keeps the events
        # whose ids are not among those it records as applied (SEEN_EVENTS_FIELD), and writes
        # the folded fields and the grown id list in one update: 1 read + 1 write per delivery,
        # and an event is applied exactly once even across a crash. A delivery stored without
        # the field (before it existed) keeps its ids in inbound_events documents instead,
        # read and created in the same transaction (1 read + 1 create per event more).
        expire_at = encode(now + self._event_retention)

        def apply(item: tuple[str, Sequence[tuple[str, Any]]]) -> tuple[str, tuple[Delivery, list[str]] | None]:
            delivery_id, pairs = item
            ref = self._col(DELIVERIES).document(delivery_id)
            unique = list(dict.fromkeys(event_id for event_id, _ in pairs))
            seen_refs = {eid: self._col("inbound_events").document(key(kind, eid)) for eid in unique}

            def body(transaction: firestore.Transaction) -> tuple[tuple[Delivery, list[str]] | None, int]:
                snapshot = ref.get(transaction=transaction)
                self.op_counts.add(reads=1)
                if not snapshot.exists:
                    return None, 0
                data = snapshot.to_dict() or {}
                inline: list[str] | None = data.get(SEEN_EVENTS_FIELD)
                if inline is None:  # stored before events were de-duplicated on the delivery
                    seen = {
                        s.reference.id
                        for s in self._client.get_all(list(seen_refs.values()), transaction=transaction)
                        if s.exists
                    }
                    self.op_counts.add(reads=len(seen_refs))
                else:
                    seen = set(inline)
                delivery = from_doc(Delivery, data)
                fresh: list[tuple[str, Any]] = []
                taken: set[str] = set()
                for event_id, event in pairs:
                    if seen_refs[event_id].id not in seen and event_id not in taken:
                        taken.add(event_id)
                        fresh.append((event_id, event))
                if not fresh:
                    return (delivery, []), 0
                writes = 0
                fields = fold(delivery, [event for _, event in fresh])
                update: dict[str, Any] = {}
                if fields:
                    delivery = delivery.model_copy(update=fields)
                    update = fields_doc(Delivery, delivery, set(fields))
                if inline is None:
                    for event_id, _ in fresh:
                        doc = {"kind": kind, "event_id": event_id, "created_at": encode(now), "expire_at": expire_at}
                        transaction.create(seen_refs[event_id], doc)
                    writes += len(fresh)
                else:
                    update[SEEN_EVENTS_FIELD] = [*inline, *(seen_refs[e].id for e, _ in fresh)][-SEEN_EVENTS_CAP:]
                if update:
                    transaction.update(ref, update)
                    writes += 1
                return (delivery, [event_id for event_id, _ in fresh]), writes

            # Writes are counted once the commit went through, not per run of the body.
            result, writes = firestore.transactional(body)(self._client.transaction())
            if result is None and self.deferred_deliveries and self._materialize(delivery_id):
                # Still waiting in its page (a provider event before our own claim was heard of).
                result, writes = firestore.transactional(body)(self._client.transaction())
            self.op_counts.add(writes=writes)
            if writes:
                self._forget((DELIVERIES, delivery_id))  # a copy from _mutate is stale now
            return delivery_id, result

        results = self._parallel(apply, list(events.items()))
        return {delivery_id: result for delivery_id, result in results if result is not None}

    def list_deliveries(
        self,
        run_id: str | None = None,
        report_id: str | None = None,
        status: DeliveryStatus | None = None,
        recipient: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        query: firestore.Query = self._col(DELIVERIES)  # type: ignore[assignment]
        filters = (
            ("run_id", run_id),
            ("report_id", report_id),
            ("status", str(status) if status is not None else None),
            ("recipient_lc", recipient.lower() if recipient is not None else None),
        )
        for field, value in filters:
            if value is not None:
                query = query.where(filter=FieldFilter(field, "==", value))
        if not self.deferred_deliveries or status not in (None, DeliveryStatus.QUEUED):
            return self._page(query, Delivery, limit, cursor, descending=False)
        # Documents and the queued deliveries still waiting in pages, merged in key order.
        # The documents' window bounds the merge: past its last key (when it is full) a
        # page entry may have a document the window did not reach, so the page stops there.
        after: Key | None = parse_cursor(cursor) if cursor else None
        fetched = self._window(query, Delivery, limit + 1, cursor, descending=False)
        before = key_of(fetched[-1]) if len(fetched) > limit else None
        shown = {d.id for d in fetched}
        metas = self._pages.metas(run_id, report_id)
        waiting = self._pages.waiting(metas, after, before, check=status is not None)
        extra: list[Delivery] = []
        for d in waiting:
            if d.id in shown or (recipient is not None and d.recipient.lower() != recipient.lower()):
                continue
            extra.append(d)
            if len(extra) > limit:
                break
        merged = sorted([*fetched, *extra], key=key_of)
        items = merged[:limit]
        more = len(merged) > limit
        return Page(items, make_cursor(items[-1].created_at, items[-1].id) if more else None)

    def _of_run(self, run_id: str) -> firestore.Query:
        return self._col(DELIVERIES).where(filter=FieldFilter("run_id", "==", run_id))

    def has_open_deliveries(self, run_id: str) -> bool:
        query = self._of_run(run_id).where(filter=FieldFilter("status", "in", sorted(DELIVERY_OPEN))).limit(1)
        if self._query(query.select(["status"])):
            return True
        if not self.deferred_deliveries:
            return False
        if self._pages.waiting_count(run_id) > 0:
            return True
        # Nothing waits now, but the last one may have left its page (a claim) after the query
        # above: everything that left before the count shows in the query asked again.
        if self._query(query.select(["status"])):
            return True
        self._pages.settle_run(run_id)
        return False

    def delivery_counts(self, run_id: str) -> dict[str, int]:
        """One count() aggregation per status, side by side: O(statuses), not O(deliveries)."""

        def count(status: DeliveryStatus) -> tuple[str, int]:
            run, of_status = FieldFilter("run_id", "==", run_id), FieldFilter("status", "==", str(status))
            return str(status), self._pages.count(run, of_status)

        counts = {status: n for status, n in self._parallel(count, list(DeliveryStatus)) if n}
        waiting = self._pages.waiting_count(run_id) if self.deferred_deliveries else 0
        if waiting:
            counts[str(DeliveryStatus.QUEUED)] = counts.get(DeliveryStatus.QUEUED, 0) + waiting
        return counts

    # Alerts --------------------------------------------------------------------------
    def _alert_ref(self, alert_id: str) -> firestore.DocumentReference:
        return self._col(notification_collection(alert_id)).document(alert_id)

    def add_alert(self, alert: Alert) -> bool:
        return self._create(self._alert_ref(alert.id), {**to_doc(alert), **self._expire(alert.created_at)})

    def get_alert(self, alert_id: str) -> Alert | None:
        data = self._get(self._alert_ref(alert_id))
        return from_doc(Alert, data) if data else None

    def mutate_alert(self, alert_id: str, change: AlertChange) -> Alert | None:
        return self._mutate(notification_collection(alert_id), Alert, alert_id, self._deciding(change))

    def list_alerts(self, limit: int = 50, report_id: str | None = None) -> list[Alert]:
        query: firestore.Query = self._col("alerts")  # type: ignore[assignment]
        if report_id is not None:
            query = query.where(filter=FieldFilter("report_id", "==", report_id))
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by(
            NAME, direction=firestore.Query.DESCENDING
        )
        return [from_doc(Alert, s.to_dict() or {}) for s in self._query(query.limit(limit))]

    # Event de-duplication --------------------------------------------------------------
    def remember_events(self, kind: str, event_ids: Sequence[str], now: datetime) -> set[str]:
        col = self._col("inbound_events")
        expire_at = encode(now + self._event_retention)

        def remember(event_id: str) -> bool:
            doc = {"kind": kind, "event_id": event_id, "created_at": encode(now), "expire_at": expire_at}
            return self._create(col.document(key(kind, event_id)), doc)

        unique = list(dict.fromkeys(event_ids))
        return {event_id for event_id, new in zip(unique, self._parallel(remember, unique), strict=True) if new}

    def _inbound_ref(self, kind: str, event_id: str) -> firestore.DocumentReference:
        # Same collection (and TTL) as remember_events, a key of its own so the two never meet.
        return self._col("inbound_events").document(key("doc", kind, event_id))

    def get_inbound_event(self, kind: str, event_id: str) -> dict[str, Any] | None:
        data = self._get(self._inbound_ref(kind, event_id))
        return json.loads(data["doc_json"]) if data else None

    def put_inbound_event(self, kind: str, event_id: str, doc: dict[str, Any], now: datetime) -> bool:
        record = {
            "kind": kind,
            "event_id": event_id,
            "created_at": encode(now),
            "expire_at": encode(now + self._event_retention),
            "doc_json": json.dumps(doc, default=str),
        }
        return self._create(self._inbound_ref(kind, event_id), record)

    # Suppressions ----------------------------------------------------------------------
    def _suppression_ref(self, recipient: str, scope: str) -> firestore.DocumentReference:
        return self._col("suppressions").document(key(recipient.lower(), scope))

    @staticmethod
    def _suppression(data: dict[str, Any]) -> Suppression:
        return Suppression(data["recipient"], data["scope"], data["reason"], decode(data["created_at"]))

    def add_suppression(self, suppression: Suppression) -> bool:
        doc = {
            "recipient": suppression.recipient.lower(),
            "scope": suppression.scope,
            "reason": suppression.reason,
            "created_at": encode(suppression.created_at),
        }
        return self._create(self._suppression_ref(suppression.recipient, suppression.scope), doc)

    def lift_suppression(self, recipient: str, scope: str) -> bool:
        try:
            self._suppression_ref(recipient, scope).delete(option=self._client.write_option(exists=True))
        except gexc.NotFound:
            return False
        self.op_counts.add(deletes=1)
        return True

    def find_suppression(self, recipient: str, report_id: str) -> Suppression | None:
        refs = [self._suppression_ref(recipient, scope) for scope in dict.fromkeys([report_id, "*"])]
        found = {s.reference.path: s for s in self._client.get_all(refs) if s.exists}
        self.op_counts.add(reads=len(refs))
        for ref in refs:  # the report's own suppression first, then the global one
            if ref.path in found:
                return self._suppression(found[ref.path].to_dict() or {})
        return None

    def suppressed_among(self, recipients: Sequence[str], report_id: str) -> set[str]:
        # `in` takes at most 30 values per query; each query bills only what it matches
        # (at least one read), far fewer than two document reads per recipient.
        lowered = list(dict.fromkeys(r.lower() for r in recipients))
        chunks = [lowered[i : i + 30] for i in range(0, len(lowered), 30)]

        def matches(chunk: list[str]) -> set[str]:
            query = self._col("suppressions").where(filter=FieldFilter("recipient", "in", chunk))
            return {
                data["recipient"]
                for snapshot in self._query(query)
                if (data := snapshot.to_dict() or {}).get("scope") in (report_id, "*")
            }

        return set().union(*self._parallel(matches, chunks)) if chunks else set()

    def list_suppressions(self, limit: int = 100) -> list[Suppression]:
        query = self._col("suppressions").order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit)
        return [self._suppression(s.to_dict() or {}) for s in self._query(query)]

    # Links and provider ids ----------------------------------------------------------------
    def _one_delivery(self, field: str, value: str) -> Delivery | None:
        query = self._col(DELIVERIES).where(filter=FieldFilter(field, "==", value)).limit(1)
        snapshots = self._query(query)
        return from_doc(Delivery, snapshots[0].to_dict() or {}) if snapshots else None

    def get_delivery_by_token(self, token: str) -> Delivery | None:
        found = self._one_delivery("link_token", token)
        if found is None and self.deferred_deliveries:
            waiting = self._pages.find_by_token(token)  # a link of a delivery not yet claimed (never sent)
            return self.get_delivery(waiting.id) if waiting is not None else None  # its document may exist by now
        return found

    def find_delivery_by_message_id(self, message_id: str) -> Delivery | None:
        return self._one_delivery("provider_message_id", message_id)

    # Job status ----------------------------------------------------------------------
    def put_job_status(self, job: str, period: str, record: dict[str, Any]) -> bool:
        # Kept as JSON text: upstream records are arbitrary, and Firestore reserves some
        # map keys (e.g. ``__x__``); the SQLite store normalises them the same way.
        doc = {"job": job, "period": period, "record_json": json.dumps(record, default=str)}
        return self._create(self._col("job_status").document(key(job, period)), doc)

    def get_job_status(self, job: str, period: str) -> dict[str, Any] | None:
        data = self._get(self._col("job_status").document(key(job, period)))
        return json.loads(data["record_json"]) if data else None
