"""What only the Firestore store promises (the shared behaviour is in the contract suite):
document layout (ids, timestamps, TTL fields), collection prefixes, operation counts,
and that a missing emulator fails loudly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.adapters.gcp.firestore_docs import key, parse_cursor
from herald.adapters.gcp.firestore_store import FirestoreStore
from herald.domain.records import Delivery, Run
from tests.support import emulators

NOW = datetime(2026, 11, 2, 7, 0, 0, 250001, tzinfo=UTC)
pytestmark = pytest.mark.emulator


def delivery(i: int) -> Delivery:
    return Delivery(
        id=f"d{i:04d}", run_id="r1", report_id="board-pack", channel="email",
        recipient=f"User{i}@Example.com", created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_documents_use_deterministic_ids_timestamps_and_ttl_fields(firestore_client):
    store = FirestoreStore(firestore_client, event_retention=timedelta(days=30), history_retention=timedelta(days=90))
    store.create_run(Run(id="r1", report_id="board-pack", trigger="manual", created_at=NOW, updated_at=NOW))
    store.create_deliveries([delivery(1)])
    store.remember_events("sendgrid", ["sg-1"], NOW)
    [page] = firestore_client.collection("delivery_pages").get()
    assert page.to_dict()["ids"] == ["d0001"] and page.to_dict()["expire_at"] == NOW + timedelta(days=90)
    store.claim_delivery("d0001", NOW, NOW + timedelta(minutes=2), seed=delivery(1))  # creates its document

    run_doc = firestore_client.collection("runs").document("r1").get().to_dict()
    assert isinstance(run_doc["created_at"], datetime)  # a Firestore timestamp, so range queries work
    assert run_doc["expire_at"] == NOW + timedelta(days=90)
    delivery_doc = firestore_client.collection("report_delivery_log").document("d0001").get().to_dict()
    assert delivery_doc["recipient_lc"] == "user1@example.com"
    assert delivery_doc["status"] == "sending"
    assert delivery_doc["expire_at"] == NOW + timedelta(days=90)
    event = firestore_client.collection("inbound_events").document(key("sendgrid", "sg-1")).get().to_dict()
    assert event["expire_at"] == NOW + timedelta(days=30)


def test_history_retention_can_be_off(firestore_client):
    store = FirestoreStore(firestore_client, history_retention=None)
    store.create_run(Run(id="r1", report_id="board-pack", trigger="manual", created_at=NOW, updated_at=NOW))
    assert "expire_at" not in firestore_client.collection("runs").document("r1").get().to_dict()


def test_prefix_keeps_stores_apart(firestore_client):
    blue, green = FirestoreStore(firestore_client, "blue_"), FirestoreStore(firestore_client, "green_")
    run = Run(id="r1", report_id="board-pack", trigger="manual", created_at=NOW, updated_at=NOW)
    assert blue.create_run(run) is True
    assert green.create_run(run) is True
    assert firestore_client.collection("blue_runs").document("r1").get().exists


def test_operation_counts(firestore_client):
    store = FirestoreStore(firestore_client, deferred_deliveries=False)  # a document per delivery at once
    assert store.create_deliveries([delivery(i) for i in range(600)]) == 600
    assert store.op_counts.as_dict() == {"reads": 0, "writes": 600, "deletes": 0, "conflicts": 0, "queries": 0}

    store.op_counts.reset()
    store.claim_delivery("d0001", NOW, NOW + timedelta(minutes=2))
    store.claim_delivery("d0001", NOW, NOW + timedelta(minutes=2))  # refused: a read, no write
    store.has_open_deliveries("r1")
    store.has_open_deliveries("no-such-run")  # an empty query still costs one read
    assert store.op_counts.as_dict() == {"reads": 4, "writes": 1, "deletes": 0, "conflicts": 0, "queries": 2}

    store.op_counts.reset()
    assert store.create_deliveries([delivery(i) for i in range(598, 602)]) == 2
    counts = store.op_counts.as_dict()
    assert counts["writes"] == 2 and counts["conflicts"] >= 1


def test_malformed_cursor_is_refused():
    for cursor in ("", "no-separator", "not-a-time|d1", "2026-11-02T07:00:00|d1", "2026-11-02T07:00:00+00:00|"):
        with pytest.raises(ValueError):
            parse_cursor(cursor)


def test_missing_emulator_jar_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.setattr(emulators, "FIRESTORE_JAR", tmp_path / "missing.jar")
    with pytest.raises(emulators.EmulatorError, match="jar not found"), emulators.run_firestore_emulator(tmp_path):
        pass
