"""Deliveries waiting for their first claim, kept in pages (issue 14).

A fan-out of N recipients used to create N delivery documents (N writes) that each send
task then updated twice (claim, outcome): 3 writes per delivery. Here the fan-out writes
one ``delivery_pages`` document per PAGE_ENTRIES deliveries (their records as JSON), and a
delivery's document is created by its first claim (``FirestoreStore.claim_delivery`` with
the seed its send task carries), or by the first change of any other kind: 2 writes per
delivery plus 1/PAGE_ENTRIES.

Invariants the store's readers rely on:

- Every delivery the fan-out creates is listed in exactly one page of its run; a second
  fan-out of the same run (a redelivered task) pages only the ids no page lists yet.
- A delivery's document is created only from its page entry, with the entry's
  ``created_at``: the documents of a run are a subset of its page entries, so
  ``entries - documents`` are the deliveries still waiting, and a waiting one is queued.
  Deliveries created in another status (suppressed) get their document at once, before
  the page that lists them is written.
- A page holds deliveries of one run and one ``created_at`` (a fan-out page): its entries
  sort by id, and ``count(documents of the run at that created_at)`` says how many of the
  entries of that instant have their document.
- ``settled`` is set once every entry of a run has its document; listings then skip it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from pydantic import TypeAdapter

from herald.adapters.gcp.firestore_docs import OpCounts, decode, encode, key
from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus

PAGES = "delivery_pages"
# Entries per page: 500 records of at most ~1.2 KB (a 254-character address) stay well
# inside Firestore's 1 MiB document limit, and one batch commit holds 500 writes.
PAGE_ENTRIES = 500
META = ["run_id", "created_at", "n", "first_id", "last_id"]
CHECK_BATCH = 100  # entries whose document is looked up at once
ENTRIES = TypeAdapter(list[Delivery])

Key = tuple[datetime, str]


def key_of(d: Delivery) -> Key:
    return (d.created_at, d.id)


@dataclass(frozen=True)
class PageMeta:
    ref: firestore.DocumentReference
    run_id: str
    created_at: datetime
    first_id: str
    last_id: str
    n: int

    @property
    def first(self) -> Key:
        return (self.created_at, self.first_id)

    @property
    def last(self) -> Key:
        return (self.created_at, self.last_id)


class DeliveryPages:
    def __init__(
        self,
        client: firestore.Client,
        pages: Callable[[], firestore.CollectionReference],
        deliveries: Callable[[], firestore.CollectionReference],
        op_counts: OpCounts,
        expire: Callable[[datetime], dict[str, Any]],
        query: Callable[[Any], list[firestore.DocumentSnapshot[Any]]],
    ) -> None:
        self._client = client
        self._pages = pages
        self._deliveries = deliveries
        self._ops = op_counts
        self._expire = expire
        self._query = query  # the store's: runs a query and counts its reads

    # Writing ------------------------------------------------------------------------------
    def _of_run(self, run_id: str) -> list[firestore.DocumentSnapshot[Any]]:
        """The run's pages, ids and settled flag only (1 read per page, 1 if none)."""
        return self._query(self._pages().where(filter=FieldFilter("run_id", "==", run_id)).select(["ids", "settled"]))

    def paged_ids(self, run_id: str) -> set[str]:
        return {i for s in self._of_run(run_id) for i in (s.to_dict() or {}).get("ids", [])}

    def page_docs(
        self, run_id: str, fresh: Sequence[Delivery]
    ) -> list[tuple[firestore.DocumentReference, dict[str, Any]]]:
        """The pages that list ``fresh`` (deliveries of ``run_id`` no page lists yet)."""
        by_instant: dict[datetime, list[Delivery]] = {}
        for d in sorted(fresh, key=key_of):
            by_instant.setdefault(d.created_at, []).append(d)
        docs = []
        for created_at, items in by_instant.items():
            for start in range(0, len(items), PAGE_ENTRIES):
                chunk = items[start : start + PAGE_ENTRIES]
                ids = [d.id for d in chunk]
                # Deterministic: the same fan-out page twice is one document (a create that fails).
                ref = self._pages().document(key(run_id, *ids))
                doc = {
                    "run_id": run_id,
                    "report_id": chunk[0].report_id,
                    "created_at": encode(created_at),
                    "n": len(chunk),
                    "first_id": ids[0],
                    "last_id": ids[-1],
                    "ids": ids,
                    "link_tokens": [d.link_token for d in chunk if d.link_token],
                    "settled": False,
                    "entries": ENTRIES.dump_json(chunk).decode(),
                    **self._expire(created_at),
                }
                docs.append((ref, doc))
        return docs

    # Reading ------------------------------------------------------------------------------
    def find(self, delivery_id: str) -> Delivery | None:
        """The page entry of a delivery (1 read, plus 1 per further page that lists it)."""
        return self._find("ids", delivery_id, lambda d: d.id == delivery_id)

    def find_by_token(self, token: str) -> Delivery | None:
        return self._find("link_tokens", token, lambda d: d.link_token == token)

    def _find(self, field: str, value: str, match: Callable[[Delivery], bool]) -> Delivery | None:
        for snapshot in self._query(self._pages().where(filter=FieldFilter(field, "array_contains", value))):
            for d in self._entries(snapshot.to_dict() or {}):
                if match(d):
                    return d
        return None

    @staticmethod
    def _entries(data: dict[str, Any]) -> list[Delivery]:
        return ENTRIES.validate_json(data.get("entries") or "[]")

    def waiting_count(self, run_id: str) -> int:
        """How many of the run's deliveries have no document yet: its page entries less its
        documents (1 read per page, 1 per 1,000 documents)."""
        listed = self.paged_ids(run_id)
        if not listed:
            return 0
        return max(0, len(listed) - self.count(FieldFilter("run_id", "==", run_id)))

    def settle_run(self, run_id: str) -> None:
        """Nothing of the run waits: mark its pages settled (a page added later is not)."""
        query = (
            self._pages()
            .where(filter=FieldFilter("run_id", "==", run_id))
            .where(filter=FieldFilter("settled", "==", False))
            .select(["settled"])
        )
        self._settle([s.reference for s in self._query(query)])

    def _settle(self, refs: Sequence[firestore.DocumentReference]) -> None:
        """Mark pages settled: every entry has its document, listings across runs skip them."""
        for start in range(0, len(refs), 500):
            batch = self._client.batch()
            for ref in refs[start : start + 500]:
                batch.update(ref, {"settled": True})
            batch.commit()
            self._ops.add(writes=len(refs[start : start + 500]))

    def count(self, *filters: FieldFilter) -> int:
        """A count() aggregation of delivery documents (1 read per 1,000 matched)."""
        query: Any = self._deliveries()
        for f in filters:
            query = query.where(filter=f)
        results = query.count(alias="n").get()  # [[AggregationResult]]
        n = int(results[0][0].value)
        self._ops.count_read(n)
        return n

    def metas(self, run_id: str | None, report_id: str | None) -> list[PageMeta]:
        """The pages that may hold entries matching the filters (1 read per page): of one run
        all of them, otherwise the unsettled ones (the runs in progress; a recipient is
        looked for in their entries)."""
        query: Any = self._pages()
        if run_id is not None:
            query = query.where(filter=FieldFilter("run_id", "==", run_id))
        else:
            query = query.where(filter=FieldFilter("settled", "==", False))
        if report_id is not None:
            query = query.where(filter=FieldFilter("report_id", "==", report_id))
        return [self._meta(s) for s in self._query(query.select(META))]

    @staticmethod
    def _meta(snapshot: firestore.DocumentSnapshot[Any]) -> PageMeta:
        data = snapshot.to_dict() or {}
        return PageMeta(
            snapshot.reference,
            str(data["run_id"]),
            decode(data["created_at"]),
            str(data["first_id"]),
            str(data["last_id"]),
            int(data["n"]),
        )

    def waiting(
        self, metas: Sequence[PageMeta], after: Key | None, before: Key | None, check: bool
    ) -> Iterator[Delivery]:
        """Queued entries of ``metas`` with ``after < key < before``, in key order. Pages are
        read instant by instant, only when the listing reaches them. A run's instant whose
        entries all have their document (a count of its documents against the entries of
        *all* its pages at that instant, 1 read) is skipped, and its pages marked settled.
        ``check``: yield only the entries that have no document (1 read per entry looked at)."""
        groups: dict[datetime, dict[str, list[PageMeta]]] = {}
        for m in metas:
            if (after is None or m.last > after) and (before is None or m.first < before):
                groups.setdefault(m.created_at, {}).setdefault(m.run_id, []).append(m)
        for instant in sorted(groups):
            entries: dict[str, Delivery] = {}
            for run_id, pages in groups[instant].items():
                if self._all_documented(run_id, instant, metas):
                    continue
                snapshots = self._client.get_all([m.ref for m in pages])
                self._ops.add(reads=len(pages))
                for snapshot in snapshots:
                    for d in self._entries(snapshot.to_dict() or {}):
                        k = key_of(d)
                        inside = (after is None or k > after) and (before is None or k < before)
                        if inside and d.status == DeliveryStatus.QUEUED:
                            entries.setdefault(d.id, d)
            ordered = sorted(entries.values(), key=key_of)
            if not check:
                yield from ordered
                continue
            for start in range(0, len(ordered), CHECK_BATCH):
                chunk = ordered[start : start + CHECK_BATCH]
                documented = self.existing([d.id for d in chunk])
                yield from (d for d in chunk if d.id not in documented)

    def _all_documented(self, run_id: str, instant: datetime, metas: Sequence[PageMeta]) -> bool:
        # Every page of the run at that instant: from ``metas`` when they are the run's
        # (all of them), else asked for (a listing across runs sees only unsettled pages).
        known = [m for m in metas if m.run_id == run_id and m.created_at == instant]
        if not known or any(m.run_id != run_id for m in metas):
            query = (
                self._pages()
                .where(filter=FieldFilter("run_id", "==", run_id))
                .where(filter=FieldFilter("created_at", "==", encode(instant)))
                .select(META)
            )
            known = [self._meta(s) for s in self._query(query)]
        if self.documented(run_id, instant) < sum(m.n for m in known):
            return False
        self._settle([m.ref for m in known])
        return True

    def documented(self, run_id: str, created_at: datetime) -> int:
        """How many deliveries of the run created at that instant have their document."""
        return self.count(FieldFilter("run_id", "==", run_id), FieldFilter("created_at", "==", encode(created_at)))

    def existing(self, ids: Sequence[str]) -> set[str]:
        refs = [self._deliveries().document(i) for i in ids]
        found = {s.id for s in self._client.get_all(refs) if s.exists}
        self._ops.add(reads=len(refs))
        return found
