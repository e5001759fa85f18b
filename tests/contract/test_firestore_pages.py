"""Deliveries waiting in pages on Google's emulator (firestore_pages.py, issue 14): a
delivery's document is made by its first claim or change, and every reader sees the
waiting ones as queued. The oracle is a plain list of the deliveries the test fanned
out and what it did to each, sorted the way the port promises (created_at, then id).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.document import DocumentReference

from herald.adapters.gcp.firestore_store import FirestoreStore
from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus
from herald.ports.store import pages
from tests.contract.test_store_contract import LEASE, NOW, make_delivery

pytestmark = pytest.mark.emulator
QUEUED, SENDING, SENT = DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.SENT


@pytest.fixture
def stores(firestore_emulator: Any, firestore_client: firestore.Client) -> Iterator[tuple[FirestoreStore, ...]]:
    other = firestore_emulator.client(project=firestore_client.project)
    yield FirestoreStore(firestore_client), FirestoreStore(other)
    other.close()


def fan_out(store: FirestoreStore, n: int, *, start: int = 0, at=NOW, run_id: str = "r1") -> list[Delivery]:
    deliveries = [
        make_delivery(f"{run_id}-d{i:04d}", run_id=run_id, recipient=f"u{i}@example.com", at=at)
        for i in range(start, start + n)
    ]
    store.create_deliveries(deliveries)
    return deliveries


def listing(store: FirestoreStore, limit: int, **filters: Any) -> list[Delivery]:
    return [d for items in pages(lambda c: store.list_deliveries(**filters, limit=limit, cursor=c)) for d in items]


def race_seeded_claims(stores: tuple[FirestoreStore, ...], d: Delivery) -> list[Delivery | None]:
    barrier = threading.Barrier(len(stores))
    results: list[Delivery | None] = [None] * len(stores)

    def claim(index: int) -> None:
        barrier.wait(timeout=10)
        results[index] = stores[index].claim_delivery(d.id, NOW, NOW + LEASE, seed=d)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_racing_seeded_claims_from_two_clients_have_exactly_one_winner(stores):
    a, _ = stores
    for d in fan_out(a, 5):  # Cloud Tasks delivered the first task twice, to two instances at once
        results = race_seeded_claims(stores, d)
        assert sum(r is not None for r in results) == 1, results
        assert a.get_delivery(d.id).attempts == 1


def test_a_seed_never_overwrites_the_document_that_exists(stores):
    a, b = stores
    [d] = fan_out(a, 1)
    assert a.claim_delivery(d.id, NOW, NOW + LEASE, seed=d) is not None
    sent = a.transition_delivery(d.id, [SENDING], SENT, provider_message_id="m1", lease_until=None)
    # The first task redelivered after the send, on another instance, with its seed.
    assert b.claim_delivery(d.id, NOW + 2 * LEASE, NOW + 3 * LEASE, seed=d) is None
    assert a.get_delivery(d.id) == sent


def test_a_seeded_create_that_landed_unheard_is_recognised_as_ours(stores, monkeypatch):
    a, _ = stores
    [d] = fan_out(a, 1)
    real_create = DocumentReference.create
    calls: list[int] = []

    def create_then_lose_the_answer(self: DocumentReference, *args: Any, **kwargs: Any) -> Any:
        real_create(self, *args, **kwargs)
        calls.append(1)
        raise gexc.DeadlineExceeded("answer lost")

    monkeypatch.setattr(DocumentReference, "create", create_then_lose_the_answer)
    claimed = a.claim_delivery(d.id, NOW, NOW + LEASE, seed=d)
    assert claimed is not None and claimed.status == SENDING and claimed.attempts == 1
    assert len(calls) == 1 and a.get_delivery(d.id).attempts == 1


def test_listings_merge_documents_and_waiting_deliveries_in_key_order(stores):
    a, b = stores
    # Two fan-out pages (1,200 deliveries at two instants, so three pages), then a few sent.
    fanned = fan_out(a, 700) + fan_out(a, 500, start=700, at=NOW + timedelta(seconds=1))
    sent_ids = {d.id for d in fanned[::97]}
    for d in fanned:
        if d.id in sent_ids:
            assert a.claim_delivery(d.id, NOW, NOW + LEASE, seed=d) is not None
            a.transition_delivery(d.id, [SENDING], SENT, provider_message_id=f"m-{d.id}", lease_until=None)
    expected = sorted(fanned, key=lambda d: (d.created_at, d.id))
    want_status = {d.id: SENT if d.id in sent_ids else QUEUED for d in fanned}

    for limit in (7, 500):  # pages of the listing that cut across documents and fan-out pages
        everything = listing(b, limit, run_id="r1")
        assert [d.id for d in everything] == [d.id for d in expected]
        assert {d.id: d.status for d in everything} == want_status
    assert [d.id for d in listing(b, 100, run_id="r1", status=QUEUED)] == [
        d.id for d in expected if d.id not in sent_ids
    ]
    assert [d.id for d in listing(b, 100, run_id="r1", status=SENT)] == [d.id for d in expected if d.id in sent_ids]
    assert [d.id for d in listing(b, 50, report_id="board-pack")] == [d.id for d in expected]
    waiting = next(d for d in expected if d.id not in sent_ids)
    assert [d.id for d in listing(b, 10, recipient=waiting.recipient.upper())] == [waiting.id]
    assert b.get_delivery(waiting.id) == waiting
    assert b.get_delivery_by_token(waiting.link_token or "-") is None  # make_delivery sets none
    assert b.delivery_counts("r1") == {"queued": 1200 - len(sent_ids), "sent": len(sent_ids)}
    assert b.has_open_deliveries("r1") is True


def test_a_run_is_done_only_when_every_waiting_delivery_has_its_document_and_is_final(stores):
    a, b = stores
    fanned = fan_out(a, 3)
    for d in fanned[:2]:
        a.claim_delivery(d.id, NOW, NOW + LEASE, seed=d)
        a.transition_delivery(d.id, [SENDING], SENT, lease_until=None)
    assert b.has_open_deliveries("r1") is True  # no open document, but one still waits in its page
    a.claim_delivery(fanned[2].id, NOW, NOW + LEASE, seed=fanned[2])
    assert b.has_open_deliveries("r1") is True  # sending
    a.transition_delivery(fanned[2].id, [SENDING], SENT, lease_until=None)
    assert b.has_open_deliveries("r1") is False
    # Settled: the report's listing no longer reads the run's pages, and shows the documents.
    b.op_counts.reset()
    assert [d.id for d in listing(b, 100, report_id="board-pack")] == [d.id for d in fanned]
    assert b.op_counts.as_dict()["reads"] == 3 + 1  # 3 documents, 1 for the empty page query


def test_a_second_fan_out_pages_only_what_no_page_lists(stores):
    a, b = stores
    fan_out(a, 3)
    more = fan_out(b, 4, start=1)  # a redelivered fan-out that chunked differently
    assert a.create_deliveries(more) == 0
    assert b.delivery_counts("r1") == {"queued": 5}
    assert [d.id for d in listing(a, 2, run_id="r1", status=QUEUED)] == [f"r1-d{i:04d}" for i in range(5)]


def test_any_change_of_a_waiting_delivery_makes_its_document_first(stores, firestore_client):
    a, b = stores
    [d] = fan_out(a, 1)
    changed = b.update_delivery(d.id, last_error="looked at")
    assert changed is not None and changed.status == QUEUED and changed.last_error == "looked at"
    assert firestore_client.collection("report_delivery_log").document(d.id).get().exists
    claimed = a.claim_delivery(d.id, NOW, NOW + LEASE, seed=d)  # the seed is stale now: the document decides
    assert claimed is not None and claimed.last_error == "looked at" and claimed.attempts == 1


def send_all(store: FirestoreStore, deliveries: list[Delivery]) -> None:
    def send(d: Delivery) -> None:
        assert store.claim_delivery(d.id, NOW, NOW + LEASE, seed=d) is not None
        store.transition_delivery(d.id, [SENDING], SENT, lease_until=None)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, deliveries))


def test_a_run_listing_finds_the_waiting_deliveries_of_an_instant_that_is_mostly_sent(stores):
    """One fan-out batch is one instant in two pages; most of it sent, spread over both: a
    window that ends inside the first page must not count the second page's documents as
    the first page's (the instant's entries are those of all its pages)."""
    a, b = stores
    fanned = fan_out(a, 1000)
    sent = [d for i, d in enumerate(fanned) if i % 5 < 3]
    send_all(a, sent)
    sent_ids = {d.id for d in sent}
    expected = sorted(fanned, key=lambda d: (d.created_at, d.id))
    for limit in (100, 1000):
        everything = listing(b, limit, run_id="r1")
        assert [d.id for d in everything] == [d.id for d in expected]
        assert {d.id for d in everything if d.status == QUEUED} == {d.id for d in fanned} - sent_ids
    assert [d.id for d in listing(b, 100, run_id="r1", status=QUEUED)] == [
        d.id for d in expected if d.id not in sent_ids
    ]


def test_the_last_delivery_leaving_its_page_between_the_two_looks_is_seen_open(stores, monkeypatch):
    """ "Any open left?" asks for an open document, then counts what waits in pages: a claim
    in between must not make the run look done (it is sending)."""
    a, b = stores
    [first, last] = fan_out(a, 2)
    send_all(a, [first])
    counted = b._pages.waiting_count

    def claim_meanwhile(run_id: str) -> int:
        a.claim_delivery(last.id, NOW, NOW + LEASE, seed=last)  # after b's first query, before its count
        return counted(run_id)

    monkeypatch.setattr(b._pages, "waiting_count", claim_meanwhile)
    assert b.has_open_deliveries("r1") is True
