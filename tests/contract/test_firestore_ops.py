"""The Firestore store's conditional writes and event batches on Google's emulator: what
they cost (``op_counts``, billed as Google bills) and that the copy a store keeps of the
documents it wrote itself never decides in place of the current document (issue 14).

Two ``FirestoreStore`` instances on two clients are two workers (or a worker and the
webhook's ingress) on the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.document import DocumentReference

from herald.adapters.gcp.firestore_docs import SEEN_EVENTS_FIELD, key
from herald.adapters.gcp.firestore_store import FirestoreStore
from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus
from tests.contract.test_store_contract import LEASE, NOW, make_delivery, race_claims

pytestmark = pytest.mark.emulator
SENDING, SENT = DeliveryStatus.SENDING, DeliveryStatus.SENT
RETRYING, FAILED = DeliveryStatus.RETRYING, DeliveryStatus.FAILED


@pytest.fixture
def stores(firestore_emulator: Any, firestore_client: firestore.Client) -> Iterator[tuple[FirestoreStore, ...]]:
    other = firestore_emulator.client(project=firestore_client.project)
    yield FirestoreStore(firestore_client), FirestoreStore(other)
    other.close()


def ops(store: FirestoreStore) -> dict[str, int]:
    counts = store.op_counts.as_dict()
    store.op_counts.reset()
    return {k: v for k, v in counts.items() if k in ("reads", "writes", "conflicts") and v}


def fold(d: Delivery, events: list[Any]) -> dict[str, Any]:
    return {"events": {**d.events, "seen": [*d.events.get("seen", []), *events]}}


def test_a_send_task_costs_two_writes_and_no_read_and_a_fan_out_one_write_per_page(stores, firestore_client):
    a, _ = stores
    fanned = [make_delivery(f"d{i:03d}", recipient=f"u{i}@example.com") for i in range(600)]
    assert a.create_deliveries(fanned) == 600
    assert ops(a) == {"reads": 1, "writes": 2}  # the run's pages (none yet), then 2 pages of 500 and 100
    assert firestore_client.collection("report_delivery_log").document("d000").get().exists is False
    claimed = a.claim_delivery("d000", NOW, NOW + LEASE, seed=fanned[0])
    assert claimed is not None and claimed.status == SENDING and claimed.attempts == 1
    assert ops(a) == {"writes": 1}  # the claim creates the document from its task's seed
    sent = a.transition_delivery("d000", [SENDING], SENT, provider_message_id="m1", lease_until=None)
    assert sent is not None and sent.status == SENT
    assert ops(a) == {"writes": 1}  # the outcome decides on the copy of the claim: 0 reads
    assert a.get_delivery("d000") == sent
    # A send task without its seed (the reconciler's) finds the delivery in its page.
    ops(a)
    assert a.claim_delivery("d001", NOW, NOW + LEASE).attempts == 1
    assert ops(a) == {"reads": 3, "writes": 2}  # no document, its page, the document created; the claim
    assert a.has_open_deliveries("r1") is True
    assert a.delivery_counts("r1") == {"sending": 1, "sent": 1, "queued": 598}


def test_racing_claims_from_two_clients_have_exactly_one_winner_with_or_without_a_copy(stores):
    a, b = stores
    ids = [f"d{i}" for i in range(3)]
    a.create_deliveries([make_delivery(i, recipient=f"{i}@example.com") for i in ids])
    later = NOW + LEASE
    for delivery_id in ids:  # a holds a copy (its own claim), b reads: the lease expired, both take over
        assert a.claim_delivery(delivery_id, NOW, NOW + LEASE) is not None
        results = race_claims((a, b), delivery_id, later)
        assert sum(r is not None for r in results) == 1, f"{delivery_id}: {results}"
        assert b.get_delivery(delivery_id).attempts == 2


def test_an_outcome_after_events_from_another_client_decides_on_the_current_document(stores):
    a, b = stores
    a.create_deliveries([make_delivery("d1")])
    a.claim_delivery("d1", NOW, NOW + LEASE)
    ops(a)
    # The webhook (another instance) applies an event between the claim and the outcome.
    assert b.apply_delivery_events("sendgrid", {"d1": [("e1", "processed")]}, NOW, fold)["d1"][1] == ["e1"]
    sent = a.transition_delivery("d1", [SENDING], SENT, provider_message_id="m1", lease_until=None)
    assert sent is not None and sent.events["seen"] == ["processed"]  # b's event is kept
    assert ops(a) == {"reads": 1, "writes": 1, "conflicts": 1}  # the copy's write refused, then read
    assert b.get_delivery("d1") == sent


def test_a_transition_refused_or_allowed_by_the_copy_is_decided_on_the_current_document(stores):
    a, b = stores
    a.create_deliveries([make_delivery("d1"), make_delivery("d2", recipient="b@example.com")])
    for delivery_id in ("d1", "d2"):
        a.claim_delivery(delivery_id, NOW, NOW + LEASE)
        # Another worker took the expired lease over and gave the attempt up for a retry.
        b.claim_delivery(delivery_id, NOW + LEASE, NOW + 2 * LEASE)
        b.transition_delivery(delivery_id, [SENDING], RETRYING, lease_until=None)
    # a's copy says sending: "sending -> sent" would pass on it, but the document is retrying.
    assert a.transition_delivery("d1", [SENDING], SENT, lease_until=None) is None
    assert b.get_delivery("d1").status == RETRYING
    # a's copy says sending: "retrying -> failed" would be refused on it; the document allows it.
    failed = a.transition_delivery("d2", [RETRYING], FAILED, last_error="gave up")
    assert failed is not None and failed.status == FAILED and failed.attempts == 2
    assert b.get_delivery("d2") == failed


def test_counters_from_two_clients_lose_nothing_with_copies_on_both_sides(stores):
    a, b = stores
    a.create_deliveries([make_delivery("d1")])

    def bump(d: Delivery) -> dict[str, Any]:
        return {"events": {**d.events, "n": int(d.events.get("n", 0)) + 1}}

    for _ in range(3):  # alternating writers: each one's copy is stale at its next write
        a.mutate_delivery("d1", bump)
        b.mutate_delivery("d1", bump)
    assert a.get_delivery("d1").events["n"] == 6


def test_a_write_that_landed_unheard_is_not_applied_twice(stores, monkeypatch):
    a, _ = stores
    a.create_deliveries([make_delivery("d1")])
    real_update = DocumentReference.update
    calls: list[int] = []

    def update_then_lose_the_answer(self: DocumentReference, *args: Any, **kwargs: Any) -> Any:
        result = real_update(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise gexc.ServiceUnavailable("answer lost")
        return result

    monkeypatch.setattr(DocumentReference, "update", update_then_lose_the_answer)
    bumped = a.mutate_delivery("d1", lambda d: {"events": {"n": int(d.events.get("n", 0)) + 1}})
    assert bumped is not None and bumped.events == {"n": 1}
    assert a.get_delivery("d1").events == {"n": 1} and len(calls) == 1  # recognised by its write id


@pytest.mark.parametrize("lost", [gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError])
def test_a_landed_unheard_write_is_recognised_after_another_writer(stores, monkeypatch, lost):
    """Our write lands, its answer is lost, and another store writes before we look: our
    token is still among the document's last write tokens, so it is not applied twice."""
    a, b = stores
    a.create_deliveries([make_delivery("d1")])
    real_update = DocumentReference.update
    calls: list[int] = []

    def bump(d: Delivery) -> dict[str, Any]:
        return {"events": {**d.events, "n": int(d.events.get("n", 0)) + 1}}

    def update_then_lose_the_answer(self: DocumentReference, *args: Any, **kwargs: Any) -> Any:
        result = real_update(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            monkeypatch.setattr(DocumentReference, "update", real_update)
            b.mutate_delivery("d1", bump)  # someone else writes in between
            raise lost("answer lost")
        return result

    monkeypatch.setattr(DocumentReference, "update", update_then_lose_the_answer)
    a.mutate_delivery("d1", bump)
    assert a.get_delivery("d1").events["n"] == 2  # ours once, theirs once


def test_an_aborted_write_is_decided_again_not_raised(stores, monkeypatch):
    a, _ = stores
    a.create_deliveries([make_delivery("d1")])
    real_update = DocumentReference.update
    calls: list[int] = []

    def abort_once(self: DocumentReference, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise gexc.Aborted("contention")  # not applied: Firestore's answer under contention
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(DocumentReference, "update", abort_once)
    claimed = a.claim_delivery("d1", NOW, NOW + timedelta(minutes=2))
    assert claimed is not None and claimed.attempts == 1
    assert a.get_delivery("d1").attempts == 1 and len(calls) == 2


def test_events_cost_one_read_and_one_write_per_delivery_and_a_replay_applies_nothing(stores):
    a, b = stores
    ids = [f"d{i}" for i in range(5)]
    fanned = [make_delivery(i, recipient=f"{i}@example.com") for i in ids]
    a.create_deliveries(fanned)
    for d in fanned:  # events follow a send, which claimed the delivery
        a.claim_delivery(d.id, NOW, NOW + LEASE, seed=d)
    batch = {i: [(f"{i}-processed", "processed"), (f"{i}-delivered", "delivered"), (f"{i}-open", "open")] for i in ids}
    ops(b)
    out = b.apply_delivery_events("sendgrid", batch, NOW, fold)
    assert all(len(fresh) == 3 for _, fresh in out.values())
    assert ops(b) == {"reads": len(ids), "writes": len(ids)}
    replay = b.apply_delivery_events("sendgrid", batch, NOW, fold)
    assert all(fresh == [] for _, fresh in replay.values())
    assert ops(b) == {"reads": len(ids)}  # nothing written
    assert a.get_delivery("d0").events["seen"] == ["processed", "delivered", "open"]


def test_deliveries_stored_before_inline_ids_keep_the_inbound_events_documents(stores, firestore_client):
    a, _ = stores
    a.create_deliveries([make_delivery("old")])
    a.claim_delivery("old", NOW, NOW + LEASE)
    old = firestore_client.collection("report_delivery_log").document("old")
    old.update({SEEN_EVENTS_FIELD: firestore.DELETE_FIELD})
    ops(a)
    batch = {"old": [("e1", "processed"), ("e2", "delivered")]}
    assert a.apply_delivery_events("sendgrid", batch, NOW, fold)["old"][1] == ["e1", "e2"]
    assert ops(a) == {"reads": 3, "writes": 3}  # the delivery and 2 de-duplication documents
    assert firestore_client.collection("inbound_events").document(key("sendgrid", "e1")).get().exists
    assert a.apply_delivery_events("sendgrid", batch, NOW + timedelta(seconds=1), fold)["old"][1] == []
    assert a.get_delivery("old").events["seen"] == ["processed", "delivered"]
