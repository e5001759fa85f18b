"""POST /webhooks/sendgrid: signature, replay window, parsing, de-duplication, ordering,
suppressions across runs, and the suppressions API."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from herald.domain.states import DeliveryStatus
from herald.services import runs
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.drive import drain
from tests.support.oracles import snapshot
from tests.support.sendgrid_events import SIGNATURE_HEADER, TIMESTAMP_HEADER, EventSigner, event

URL = "/webhooks/sendgrid"


@pytest.fixture
def signer():
    return EventSigner()


@pytest.fixture
def c(tmp_path, signer):
    container = factories.container(tmp_path, sendgrid_webhook_public_key=signer.public_key)
    apply_definitions(container, [factories.report()])
    return container


def sent_run(c, key="r1"):
    run, _ = runs.start_manual_run(c, "board-pack", request_id=key)
    drain(c)
    return {d.recipient: d for d in c.store.list_deliveries(run_id=run.id).items}


@pytest.fixture
def sent(c):
    return sent_run(c)


def post(client, c, signer, events, *, at=None, body=None):
    stamp = int((at or c.clock.now()).timestamp())
    raw = body if body is not None else json.dumps(events).encode()
    return client.post(URL, data=raw, headers=signer.headers(raw, stamp))


def test_a_signed_batch_is_applied(client, c, signer, sent):
    d = sent["a@example.com"]
    now = c.clock.now()
    response = post(client, c, signer, [event("processed", d, now), event("delivered", d, now + timedelta(seconds=3))])
    assert response.status_code == 200
    assert response.json["applied"] == 2 and response.json["duplicates"] == 0
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.DELIVERED
    assert stored.events["delivered_at"] == (now + timedelta(seconds=3)).replace(microsecond=0).isoformat()
    assert [h["event"] for h in stored.events["history"]] == ["processed", "delivered"]


def test_tampered_body_is_403_and_changes_nothing(client, c, signer, sent):
    d = sent["a@example.com"]
    body = json.dumps([event("bounce", d, c.clock.now(), reason="550 no such user")]).encode()
    headers = signer.headers(body, int(c.clock.now().timestamp()))
    tampered = body.replace(b"bounce", b"deliv")
    before = snapshot(c)
    assert client.post(URL, data=tampered, headers=headers).status_code == 403
    assert c.store.get_delivery(d.id).status == DeliveryStatus.SENT
    assert c.store.list_suppressions() == []
    assert snapshot(c) == before
    # Nothing was remembered either: the genuine batch still applies.
    assert client.post(URL, data=body, headers=headers).json["applied"] == 1


def test_another_key_is_403(client, c, sent):
    d = sent["a@example.com"]
    before = snapshot(c)
    assert post(client, c, EventSigner(), [event("delivered", d, c.clock.now())]).status_code == 403
    assert snapshot(c) == before


@pytest.mark.parametrize("skew", [-601, 601])
def test_stale_or_future_timestamps_are_403(client, c, signer, sent, skew):
    d = sent["a@example.com"]
    before = snapshot(c)
    response = post(
        client, c, signer, [event("delivered", d, c.clock.now())], at=c.clock.now() + timedelta(seconds=skew)
    )
    assert response.status_code == 403
    assert c.store.get_delivery(d.id).status == DeliveryStatus.SENT
    assert snapshot(c) == before


def test_inside_the_tolerance_is_accepted(client, c, signer, sent):
    d = sent["a@example.com"]
    at = c.clock.now() - timedelta(seconds=599)
    assert post(client, c, signer, [event("delivered", d, c.clock.now())], at=at).status_code == 200


@pytest.mark.parametrize("drop", [SIGNATURE_HEADER, TIMESTAMP_HEADER, "both"])
def test_unsigned_is_401(client, c, signer, sent, drop):
    body = json.dumps([event("delivered", sent["a@example.com"], c.clock.now())]).encode()
    headers = signer.headers(body, int(c.clock.now().timestamp()))
    for name in [SIGNATURE_HEADER, TIMESTAMP_HEADER] if drop == "both" else [drop]:
        headers.pop(name)
    before = snapshot(c)
    assert client.post(URL, data=body, headers=headers).status_code == 401
    assert snapshot(c) == before


# The contract: 401 when a signature header is missing (an empty one counts as missing),
# 403 when a signature is there and does not verify.
@pytest.mark.parametrize(("signature", "status"), [("not base64!", 403), ("AAAA", 403), ("", 401)])
def test_garbage_signatures_are_refused(client, c, signature, status):
    headers = {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: str(int(c.clock.now().timestamp()))}
    before = snapshot(c)
    assert client.post(URL, data=b"[]", headers=headers).status_code == status
    assert snapshot(c) == before


@pytest.mark.parametrize("body", [b"{not json", b'{"event": "delivered"}', b'"text"', b"\xff\xfe"])
def test_malformed_bodies_are_400(client, c, signer, body):
    assert post(client, c, signer, None, body=body).status_code == 400


def test_without_a_key_every_request_is_refused(tmp_path):
    from herald.web.app import create_app

    container = factories.container(tmp_path)
    response = create_app(container).test_client().post(URL, data=b"[]")
    assert response.status_code == 503


def test_duplicates_count_once_within_and_across_batches(client, c, signer, sent):
    d = sent["a@example.com"]
    now = c.clock.now()
    opened = event("open", d, now, sg_machine_open=False)
    first = post(client, c, signer, [opened, opened, event("open", d, now + timedelta(minutes=1))]).json
    assert (first["applied"], first["duplicates"]) == (2, 1)
    again = post(client, c, signer, [opened]).json  # SendGrid retries a batch for 24 hours
    assert (again["applied"], again["duplicates"]) == (0, 1)
    assert c.store.get_delivery(d.id).events["opens_human"] == 2


def test_unknown_event_types_are_counted_and_ignored(client, c, signer, sent):
    d = sent["a@example.com"]
    answer = post(client, c, signer, [event("account_status_change", d, c.clock.now()), "junk", {"no": "event"}]).json
    assert answer["ignored"] == 3 and answer["unknown_types"] == {"account_status_change": 1}
    assert c.store.get_delivery(d.id).events == {}


def test_events_without_custom_args_correlate_by_message_id(client, c, signer, sent):
    d = sent["b@example.com"]
    bare = event("delivered", None, c.clock.now(), message_id=d.provider_message_id)
    assert "delivery_id" not in bare
    answer = post(client, c, signer, [bare, event("delivered", None, c.clock.now(), message_id="not-ours")]).json
    assert answer["applied"] == 1 and answer["unmatched"] == 1
    assert c.store.get_delivery(d.id).status == DeliveryStatus.DELIVERED


def test_out_of_order_in_one_batch_ends_where_the_timestamps_say(client, c, signer, sent):
    d = sent["a@example.com"]
    t = c.clock.now()
    batch = [
        event("delivered", d, t + timedelta(seconds=5)),
        event("bounce", d, t + timedelta(seconds=60), type="bounce", reason="550 mailbox gone", status="5.1.1"),
        event("processed", d, t),
    ]
    post(client, c, signer, batch)
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.BOUNCED
    assert [h["event"] for h in stored.events["history"]] == ["processed", "delivered", "bounce"]
    assert stored.events["bounce_reason"] == "550 mailbox gone"
    # A late duplicate of "delivered" (new event id) arriving afterwards cannot undo the bounce.
    post(client, c, signer, [event("delivered", d, t + timedelta(seconds=90))])
    assert c.store.get_delivery(d.id).status == DeliveryStatus.BOUNCED


def test_suppression_across_runs_and_resubscribe(client, c, signer, sent):
    a, b = sent["a@example.com"], sent["b@example.com"]
    now = c.clock.now()
    post(
        client,
        c,
        signer,
        [event("bounce", a, now, type="bounce", reason="550 5.1.1 unknown user"), event("group_unsubscribe", b, now)],
    )
    scopes = {(s.recipient, s.scope, s.reason) for s in c.store.list_suppressions()}
    assert scopes == {("a@example.com", "*", "bounce"), ("b@example.com", "*", "group_unsubscribe")}

    mailer = c.mailer
    before = {k: len(v) for k, v in mailer.sent.items()}
    second = sent_run(c, "r2")
    assert {r: d.status for r, d in second.items()} == {
        "a@example.com": DeliveryStatus.SUPPRESSED,
        "b@example.com": DeliveryStatus.SUPPRESSED,
    }
    assert {k: len(v) for k, v in mailer.sent.items()} == before  # nothing sent to either

    # b resubscribes to the group (a later event): lifted. a's hard bounce stays.
    post(client, c, signer, [event("group_resubscribe", b, now + timedelta(minutes=5))])
    third = sent_run(c, "r3")
    assert third["b@example.com"].status == DeliveryStatus.SENT
    assert third["a@example.com"].status == DeliveryStatus.SUPPRESSED


def test_blocked_is_a_bounce_suppressed_for_this_report_only(client, c, signer, sent):
    d = sent["a@example.com"]
    post(client, c, signer, [event("bounce", d, c.clock.now(), type="blocked", reason="554 blocked by policy")])
    stored = c.store.get_delivery(d.id)
    assert stored.status == DeliveryStatus.BOUNCED and stored.events["bounce_type"] == "blocked"
    assert [(s.scope, s.reason) for s in c.store.list_suppressions()] == [("board-pack", "blocked")]
    assert c.store.find_suppression("a@example.com", "other-report") is None


# The suppressions API ------------------------------------------------------------------
def test_api_lists_and_lifts_suppressions(client, c, signer, sent):
    post(client, c, signer, [event("spamreport", sent["a@example.com"], c.clock.now())])
    listed = client.get("/api/suppressions").json["suppressions"]
    assert [(s["recipient"], s["scope"], s["reason"]) for s in listed] == [("a@example.com", "*", "spamreport")]
    assert client.delete("/api/suppressions/a@example.com?scope=board-pack").status_code == 404
    assert client.delete("/api/suppressions/A@Example.com?scope=*").status_code == 200
    assert client.get("/api/suppressions").json["suppressions"] == []


@pytest.mark.parametrize(
    "path", ["/api/suppressions/a@example.com", "/api/suppressions/not-an-address?scope=*", "/api/suppressions?limit=0"]
)
def test_api_validates_suppression_requests(client, path):
    response = client.get(path) if "limit" in path else client.delete(path)
    assert response.status_code == 400


def test_api_suppressions_need_the_token_when_configured(tmp_path):
    from herald.web.app import create_app

    container = factories.container(tmp_path, api_token="t0ken")
    client = create_app(container).test_client()
    assert client.get("/api/suppressions").status_code == 401
    assert client.get("/api/suppressions", headers={"Authorization": "Bearer t0ken"}).status_code == 200
