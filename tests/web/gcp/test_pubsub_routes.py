"""Pub/Sub push intake: envelope validation (400, logged, nothing handled or remembered),
handled messages acknowledged with 204 and remembered per subscription, and a handler
that is not available answered 503 so Pub/Sub retries."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from herald.web import pubsub
from tests.web.gcp.conftest import PUSH_SA, bearer, envelope

SUB = "projects/herald-test/subscriptions/herald-business-events-push"


@pytest.fixture
def handled(monkeypatch) -> list[tuple[str, tuple[Any, ...]]]:
    calls: list[tuple[str, tuple[Any, ...]]] = []

    def fake(name: str):
        def handler(c, *args):
            calls.append((name, args))
            return "ok"

        return handler

    monkeypatch.setattr(pubsub, "_handler", fake)
    return calls


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_BODIES = [
    ("not JSON", b"{"),
    ("not an object", b"[]"),
    ("no message", json.dumps({"subscription": SUB}).encode()),
    ("no id", json.dumps({"message": {"data": b64(b"{}")}}).encode()),
    ("no data", json.dumps({"message": {"messageId": "1"}}).encode()),
    ("bad base64", json.dumps({"message": {"messageId": "1", "data": "%%%"}}).encode()),
    ("data not JSON", json.dumps({"message": {"messageId": "1", "data": b64(b"hello")}}).encode()),
    ("data not an object", json.dumps({"message": {"messageId": "1", "data": b64(b"[1]")}}).encode()),
    ("data not UTF-8", json.dumps({"message": {"messageId": "1", "data": b64(b"\xff\xfe")}}).encode()),
    (
        "attributes not strings",
        json.dumps({"message": {"messageId": "1", "data": b64(b"{}"), "attributes": {"a": 1}}}).encode(),
    ),
    ("bad publishTime", json.dumps({"message": {"messageId": "1", "data": b64(b"{}"), "publishTime": "now"}}).encode()),
    ("empty body", b""),
]


@pytest.mark.parametrize("path", ["/pubsub/events/orders", "/pubsub/job-status"])
@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_envelopes_are_400_logged_and_not_handled(client, c, signer, handled, caplog, path, case, body):
    with caplog.at_level("ERROR"):
        response = client.post(path, data=body, content_type="application/json", headers=bearer(signer, email=PUSH_SA))
    assert response.status_code == 400, case
    assert handled == []
    assert "pubsub push refused" in caplog.text
    assert c.store.remember_events(f"pubsub:{SUB}", ["1"], c.clock.now()) == {"1"}


@pytest.mark.parametrize(
    ("path", "data", "attributes"),
    [
        ("/pubsub/events", {"type": "order.closed"}, {}),  # no source anywhere
        ("/pubsub/events/bad source!", {"type": "order.closed"}, {}),
        ("/pubsub/events", {"type": "order.closed", "source": "../x"}, {}),
        ("/pubsub/job-status", {"period": "2026-11"}, {}),  # no job
        ("/pubsub/job-status", {"job": 5}, {}),
    ],
)
def test_messages_that_can_never_be_handled_are_400(client, signer, handled, path, data, attributes):
    response = client.post(path, json=envelope(data, **attributes), headers=bearer(signer, email=PUSH_SA))
    assert response.status_code in (400, 404)  # 404: a source the route itself cannot match
    assert handled == []


def test_a_business_event_is_handled_then_acknowledged_and_remembered(client, c, signer, handled):
    event = {"type": "order.closed", "id": "evt-1"}
    body = envelope(event, message_id="42", source="orders")
    response = client.post("/pubsub/events", json=body, headers=bearer(signer, email=PUSH_SA))
    assert response.status_code == 204
    (name, (source, data, digest)) = handled[0]
    assert (name, source, data, digest) == ("ingest_event", "orders", event, pubsub.digest(event))
    assert c.store.remember_events(f"pubsub:{SUB}", ["42"], c.clock.now()) == set()


def test_the_path_names_the_source(client, signer, handled):
    response = client.post("/pubsub/events/crm", json=envelope({"id": "e"}), headers=bearer(signer, email=PUSH_SA))
    assert response.status_code == 204 and handled[0][1][0] == "crm"


def test_a_job_status_goes_to_record_job_status(client, signer, handled):
    record = {"job": "warehouse-etl", "period": "2026-11-01", "status": "succeeded"}
    response = client.post("/pubsub/job-status", json=envelope(record), headers=bearer(signer, email=PUSH_SA))
    assert response.status_code == 204
    assert handled == [("record_job_status", (record,))]


def test_a_missing_handler_is_503_so_pubsub_retries_and_nothing_is_remembered(client, c, signer, monkeypatch):
    def missing(name: str):
        raise pubsub.NotHandled(name)

    monkeypatch.setattr(pubsub, "_handler", missing)
    response = client.post("/pubsub/events/orders", json=envelope({"id": "e"}), headers=bearer(signer, email=PUSH_SA))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert c.store.remember_events(f"pubsub:{SUB}", ["1"], c.clock.now()) == {"1"}
