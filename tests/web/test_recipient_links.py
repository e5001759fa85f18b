"""Renewing expired links (rate-limited), the atomic download counter, and one-click unsubscribe."""

from __future__ import annotations

import threading

import pytest

from herald.domain.states import DeliveryStatus
from herald.services import links, runs
from tests.drive import drain


@pytest.fixture
def delivered(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    return c.store.list_deliveries(run_id=run.id, recipient="a@example.com").items[0]


def expire(c):
    c.clock.advance(seconds=c.settings.link_ttl_seconds + 1)


def test_an_expired_link_sends_a_fresh_one_to_the_same_address(client, c, delivered):
    expire(c)
    assert b"/renew" in client.get(f"/l/{delivered.link_token}").data
    response = client.post(f"/l/{delivered.link_token}/renew")
    assert response.status_code == 202
    drain(c)
    fresh_id = c.store.get_delivery(delivered.id).events["renewals"][-1]["delivery_id"]
    fresh = c.store.get_delivery(fresh_id)
    assert fresh.status == DeliveryStatus.SENT and fresh.recipient == delivered.recipient
    assert fresh.events["renewal_of"] == delivered.id and fresh.link_token != delivered.link_token
    assert len(fresh.link_token) >= 32  # 192 bits, URL-safe base64
    mails = c.mailer.sent["a@example.com"]
    assert len(mails) == 2 and fresh.link_token in mails[-1].text
    assert client.get(f"/l/{fresh.link_token}").status_code == 200  # the new link works


def test_renewal_is_rate_limited_per_delivery(client, c, delivered):
    expire(c)
    assert client.post(f"/l/{delivered.link_token}/renew").status_code == 202
    c.clock.advance(minutes=59)
    limited = client.post(f"/l/{delivered.link_token}/renew")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) == 60
    c.clock.advance(minutes=1)
    assert client.post(f"/l/{delivered.link_token}/renew").status_code == 202
    assert len(c.store.get_delivery(delivered.id).events["renewals"]) == 2


def test_a_valid_link_is_not_renewed(client, c, delivered):
    assert client.post(f"/l/{delivered.link_token}/renew").status_code == 409


@pytest.mark.parametrize("token", ["short", "x" * 32])
def test_renewing_an_unknown_token_is_a_plain_404(client, token):
    response = client.post(f"/l/{token}/renew")
    assert response.status_code == 404 and response.data == b"Not found"


def test_a_tampered_token_is_404(client, delivered):
    token = delivered.link_token
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get(f"/l/{tampered}").status_code == 404


def test_concurrent_downloads_are_all_counted(c, delivered):
    barrier = threading.Barrier(8)

    def click():
        barrier.wait()
        for _ in range(25):
            links.record_download(c, delivered, "pytest")

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.store.get_delivery(delivered.id).events["downloads"]["count"] == 200


# One-click unsubscribe (RFC 8058) -------------------------------------------------------
def test_get_shows_a_confirm_page_and_suppresses_nothing(client, c, delivered):
    page = client.get(f"/unsubscribe/{delivered.link_token}")
    assert page.status_code == 200 and b"Unsubscribe" in page.data
    assert c.store.list_suppressions() == []


def test_one_click_post_suppresses_that_report_for_later_runs(client, c, delivered):
    response = client.post(
        f"/unsubscribe/{delivered.link_token}",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert [(s.recipient, s.scope) for s in c.store.list_suppressions()] == [("a@example.com", "board-pack")]
    assert client.post(f"/unsubscribe/{delivered.link_token}").status_code == 200  # repeatable
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r2")
    drain(c)
    statuses = {d.recipient: d.status for d in c.store.list_deliveries(run_id=run.id).items}
    assert statuses == {"a@example.com": DeliveryStatus.SUPPRESSED, "b@example.com": DeliveryStatus.SENT}


def test_the_email_carries_the_one_click_headers(c, delivered):
    message = c.mailer.sent["a@example.com"][0]
    assert message.headers["List-Unsubscribe"] == f"<{c.settings.public_url}/unsubscribe/{delivered.link_token}>"
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("method", ["get", "post"])
def test_unsubscribe_with_an_unknown_token_is_a_plain_404(client, method):
    response = getattr(client, method)("/unsubscribe/" + "z" * 32)
    assert response.status_code == 404 and response.data == b"Not found"


def test_expired_renewal_of_a_suppressed_recipient_sends_nothing(client, c, delivered):
    client.post(f"/unsubscribe/{delivered.link_token}")
    expire(c)
    assert client.post(f"/l/{delivered.link_token}/renew").status_code == 409
    drain(c)
    assert len(c.mailer.sent["a@example.com"]) == 1
