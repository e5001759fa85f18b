"""Business-event webhooks: valid, forged, stale, replayed and conflicting events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from herald.domain.states import RunStatus
from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from herald.web.events import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests import factories
from tests.drive import drain
from tests.support.oracles import event_signature as signature
from tests.support.oracles import snapshot

SECRET = "salesforce-signing-secret"
OLD_SECRET = "old-salesforce-secret"


def onboarding(**overrides: Any):
    return factories.report(
        id="client-onboarding",
        name="New client pack",
        schedule=None,
        recipients={"email": ["am@example.com"]},
        summary="Welcome pack for {params[client_name]}",
        triggers=[
            {
                "source": "salesforce",
                "event": "deal.closed",
                "conditions": {"$.data.stage": "Closed Won", "$.data.account.region": ["EMEA", "NA"]},
                "params": {"client_id": "$.data.account.id", "client_name": "$.data.account.name", "kind": "first"},
                "recipients": "$.data.contacts[*].email",
            }
        ],
        **overrides,
    )


def deal(event_id: str = "evt-1", **data: Any) -> dict[str, Any]:
    body = {
        "stage": "Closed Won",
        "account": {"id": "acc-42", "name": "Acme Ltd", "region": "EMEA"},
        "contacts": [{"email": "ceo@acme.example"}, {"email": "not an address"}, {"email": "cfo@acme.example"}],
    }
    body.update(data)
    return {"id": event_id, "type": "deal.closed", "occurred_at": "2026-11-02T06:30:00Z", "data": body}


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, event_secrets={"salesforce": [SECRET, OLD_SECRET]})
    apply_definitions(container, [onboarding(), factories.report()])
    return container


@pytest.fixture
def client(c):
    return create_app(c).test_client()


def post(client, c, event: Any, *, secret: str = SECRET, skew: int = 0, source: str = "salesforce", raw=None):
    body = raw if raw is not None else json.dumps(event).encode()
    stamp = str(int(c.clock.now().timestamp()) + skew)
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(secret, stamp, body)}
    return client.post(f"/webhooks/events/{source}", data=body, headers=headers, content_type="application/json")


def test_a_valid_event_starts_the_matching_report_with_params_and_contacts(client, c):
    response = post(client, c, deal())
    assert response.status_code == 202
    [run_id] = response.get_json()["runs"]  # its stability is the replay test's and test_boundaries' to check
    assert response.get_json() == {"event_id": "evt-1", "runs": [run_id], "replayed": False}
    run = c.store.get_run(run_id)
    assert run.report_id == "client-onboarding" and run.trigger == "event" and run.status == RunStatus.PENDING
    assert run.params == {"client_id": "acc-42", "client_name": "Acme Ltd", "kind": "first"}
    assert run.extra_recipients == ["ceo@acme.example", "cfo@acme.example"]  # the bad contact is skipped
    drain(c)
    assert c.store.get_run(run_id).status == RunStatus.SUCCEEDED
    assert sorted(c.mailer.sent) == ["am@example.com", "ceo@acme.example", "cfo@acme.example"]
    assert "Welcome pack for Acme Ltd" in c.mailer.sent["ceo@acme.example"][0].text


def test_an_event_that_matches_no_condition_starts_nothing(client, c):
    response = post(client, c, deal(stage="Closed Lost"))
    assert response.status_code == 202 and response.get_json()["runs"] == []
    response = post(client, c, deal("evt-2", account={"id": "a", "name": "n", "region": "APAC"}))
    assert response.get_json()["runs"] == []
    assert c.store.list_runs().items == []


def test_a_forged_signature_is_403_and_starts_nothing(client, c):
    before = snapshot(c)
    assert post(client, c, deal(), secret="guessed").status_code == 403
    body = json.dumps(deal()).encode()
    stamp = str(int(c.clock.now().timestamp()))
    tampered = body.replace(b"acc-42", b"acc-43")
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRET, stamp, body)}
    assert client.post("/webhooks/events/salesforce", data=tampered, headers=headers).status_code == 403
    assert c.store.list_runs().items == []
    assert snapshot(c) == before


@pytest.mark.parametrize(
    "headers",
    [{}, {TIMESTAMP_HEADER: "123"}, {SIGNATURE_HEADER: "v1=ab"}, {TIMESTAMP_HEADER: "soon", SIGNATURE_HEADER: "v1=ab"}],
)
def test_unsigned_requests_are_401(client, c, headers):
    before = snapshot(c)
    assert client.post("/webhooks/events/salesforce", json=deal(), headers=headers).status_code == 401
    assert snapshot(c) == before


def test_a_stale_or_future_timestamp_is_refused_even_when_signed(client, c):
    before = snapshot(c)
    assert post(client, c, deal(), skew=-301).status_code == 401
    assert post(client, c, deal(), skew=301).status_code == 401
    assert c.store.list_runs().items == []
    assert snapshot(c) == before
    assert post(client, c, deal(), skew=-299).status_code == 202


def test_the_previous_secret_still_signs_during_rotation(client, c):
    assert post(client, c, deal(), secret=OLD_SECRET).status_code == 202


def test_a_replayed_event_returns_the_same_runs_and_creates_nothing(client, c):
    first = post(client, c, deal()).get_json()
    again = post(client, c, deal())
    assert again.status_code == 200
    assert again.get_json() == {**first, "replayed": True}
    # The same content serialised differently is the same event.
    reordered = json.dumps(deal(), sort_keys=True, indent=2).encode()
    assert post(client, c, None, raw=reordered).status_code == 200
    assert len(c.store.list_runs().items) == 1


def test_the_same_id_with_other_content_is_422(client, c):
    post(client, c, deal())
    response = post(client, c, deal(account={"id": "acc-99", "name": "Other", "region": "NA"}))
    assert response.status_code == 422
    assert "different content" in response.get_json()["error"]
    assert len(c.store.list_runs().items) == 1
    assert post(client, c, deal()).status_code == 200  # the original is still recognised


def test_unknown_source_is_404(client, c):
    assert post(client, c, deal(), source="hubspot").status_code == 404


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        json.dumps({"type": "deal.closed"}).encode(),
        json.dumps({"id": "e", "data": {}}).encode(),
        json.dumps({"id": "e", "type": "t", "data": [1]}).encode(),
    ],
)
def test_malformed_events_are_400(client, c, raw):
    assert post(client, c, None, raw=raw).status_code == 400


def test_a_matching_event_without_a_mapped_field_is_422(client, c):
    event = deal()
    del event["data"]["account"]["name"]
    response = post(client, c, event)
    assert response.status_code == 422 and "client_name" in response.get_json()["error"]
    assert c.store.list_runs().items == []


def test_a_disabled_report_is_not_triggered(tmp_path):
    container = factories.container(tmp_path, event_secrets={"salesforce": SECRET})
    apply_definitions(container, [onboarding(enabled=False)])
    response = post(create_app(container).test_client(), container, deal())
    assert response.status_code == 202 and response.get_json()["runs"] == []
