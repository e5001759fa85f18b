"""firestore_indexes.json serves every query the Firestore store runs.

The emulator answers any query without an index, so this is where a missing composite
index is caught: each query the store issues (captured while it runs against the
emulator) must be served by a single-field index, by merging single-field indexes
(equality filters only), or by a declared composite index.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from herald.adapters.gcp.firestore_docs import SEEN_EVENTS_FIELD
from herald.adapters.gcp.firestore_store import WRITE_IDS_FIELD, FirestoreStore
from herald.domain.records import Alert, Delivery, Run
from herald.domain.states import DeliveryStatus, RunStatus

INDEX_FILE = Path(__file__).resolve().parents[3] / "service/herald/adapters/gcp/firestore_indexes.json"
COLLECTIONS = {
    "reports",
    "runs",
    "report_delivery_log",
    "job_status",
    "suppressions",
    "alerts",
    "notices",
    "inbound_events",
    "delivery_pages",
}
NOW = datetime(2026, 11, 2, 7, tzinfo=UTC)
# Fields only the Firestore documents carry (besides the records' own fields).
ADAPTER_FIELDS = {
    "reports": {"name", "owner", "enabled", "next_fire_at", "definition_json"},
    "runs": {"expire_at", WRITE_IDS_FIELD, *Run.model_fields},
    "report_delivery_log": {"expire_at", "recipient_lc", SEEN_EVENTS_FIELD, WRITE_IDS_FIELD, *Delivery.model_fields},
    "alerts": {"expire_at", WRITE_IDS_FIELD, *Alert.model_fields},
    "notices": {"expire_at", WRITE_IDS_FIELD, *Alert.model_fields},
    "inbound_events": {"kind", "event_id", "created_at", "expire_at"},
    "job_status": {"job", "period", "record_json"},
    "suppressions": {"recipient", "scope", "reason", "created_at"},
    "delivery_pages": {
        "run_id",
        "report_id",
        "created_at",
        "n",
        "first_id",
        "last_id",
        "ids",
        "link_tokens",
        "settled",
        "entries",
        "expire_at",
    },
}
EQUALITY = {"EQUAL", "IN"}


def load() -> dict:
    return json.loads(INDEX_FILE.read_text())


def test_index_file_names_known_collections_and_fields():
    spec = load()
    for index in spec["indexes"]:
        assert index["collectionGroup"] in COLLECTIONS
        assert index["queryScope"] == "COLLECTION"
        assert len(index["fields"]) >= 2, "single-field indexes are automatic"
        for field in index["fields"]:
            assert field["fieldPath"] in ADAPTER_FIELDS[index["collectionGroup"]]
            assert field["order"] in {"ASCENDING", "DESCENDING"}
    for override in spec["fieldOverrides"]:
        assert override["fieldPath"] in ADAPTER_FIELDS[override["collectionGroup"]]
    ttl = {(o["collectionGroup"], o["fieldPath"]) for o in spec["fieldOverrides"] if o.get("ttl")}
    assert ttl == {
        (c, "expire_at")
        for c in ("inbound_events", "runs", "report_delivery_log", "alerts", "notices", "delivery_pages")
    }


def _shape(query) -> tuple[str, list[str], list[tuple[str, str]]]:
    pb = query._to_protobuf()
    collection = pb.from_[0].collection_id
    filters = []
    stack = [pb.where] if pb.where else []
    while stack:
        node = stack.pop()
        if "composite_filter" in node:
            stack += list(node.composite_filter.filters)
        elif "field_filter" in node:
            filters.append((node.field_filter.field.field_path, node.field_filter.op.name))
    orders = [(o.field.field_path, o.direction.name) for o in pb.order_by if o.field.field_path != "__name__"]
    equality = sorted(f for f, op in filters if op in EQUALITY)
    ranged = [(f, "ASCENDING") for f, op in filters if op not in EQUALITY and f not in {o for o, _ in orders}]
    return collection, equality, ranged + orders


def _served(collection: str, equality: list[str], ordered: list[tuple[str, str]], composites: list) -> bool:
    if len(set(equality) | {f for f, _ in ordered}) <= 1 or not ordered:
        return True  # a single-field index, or equality filters merged from single-field indexes
    for index in composites:
        if index["collectionGroup"] != collection:
            continue
        fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]
        head, tail = fields[: len(equality)], fields[len(equality) :]
        if sorted(f for f, _ in head) == equality and tail == ordered:
            return True
    return False


@pytest.mark.emulator
def test_every_query_the_store_runs_has_an_index(firestore_client, monkeypatch):
    store = FirestoreStore(firestore_client)
    seen = []
    real_query = store._query

    def capture(query):
        seen.append(_shape(query))
        return real_query(query)

    monkeypatch.setattr(store, "_query", capture)
    store.due_reports(NOW, 10)
    store.list_reports()
    for report_id in (None, "r"):
        for run_status in (None, RunStatus.PENDING):
            store.list_runs(report_id=report_id, status=run_status, cursor=f"{NOW.isoformat()}|x")
    for filters in (
        {"run_id": "r"},
        {"run_id": "r", "status": DeliveryStatus.QUEUED},
        {"report_id": "b"},
        {"report_id": "b", "status": DeliveryStatus.FAILED},
        {"status": DeliveryStatus.FAILED},
        {"recipient": "a@example.com"},
        {"recipient": "a@example.com", "report_id": "b"},
        {},
    ):
        store.list_deliveries(**filters, cursor=f"{NOW.isoformat()}|x")
    store.has_open_deliveries("r")
    store.create_deliveries(
        [
            Delivery(
                id="d",
                run_id="r",
                report_id="b",
                channel="email",
                recipient="a@example.com",
                created_at=NOW,
                updated_at=NOW,
            )
        ]
    )
    store.get_delivery("waiting")  # looked for in the pages
    store.claim_delivery("d", NOW, NOW)  # the document made from its page entry
    store.delivery_counts("r")
    store.list_alerts()
    store.list_alerts(report_id="b")
    store.list_suppressions()
    store.get_delivery_by_token("t")
    store.find_delivery_by_message_id("m")

    composites = load()["indexes"]
    missing = [shape for shape in seen if not _served(*shape, composites)]
    assert not missing, f"queries without an index in firestore_indexes.json: {missing}"
    assert len(seen) >= 20
