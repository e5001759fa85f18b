"""services/links.py without the web layer: a recipient's personal link (README: "valid
7 days", "only the button counts as a download"), renewing an expired one at most once
per HERALD_LINK_RENEW_INTERVAL_SECONDS, and one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from herald.domain.states import DeliveryStatus
from herald.services import links, runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import SEND_DELIVERY
from tests import factories
from tests.drive import drain

WEEK = timedelta(days=7)


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path)
    apply_definitions(container, [factories.report(recipients={"email": ["a@example.com"], "slack": ["C0123"]})])
    return container


@pytest.fixture
def delivered(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    return c.store.list_deliveries(run_id=run.id, recipient="a@example.com").items[0]


@pytest.fixture
def slack_delivered(c, delivered):
    return c.store.list_deliveries(run_id=delivered.run_id, recipient="C0123").items[0]


def test_a_link_expires_seven_days_after_its_delivery_was_created(c, delivered):
    assert links.link_expires(c, delivered) == delivered.created_at + WEEK


def test_each_download_is_counted_with_first_and_last_time_and_the_agent(c, delivered):
    first_at = c.clock.now()
    once = links.record_download(c, delivered, "Mail/1.0")
    assert once is not None
    assert once.events["downloads"] == {
        "count": 1,
        "first_at": first_at.isoformat(),
        "last_at": first_at.isoformat(),
        "last_user_agent": "Mail/1.0",
    }
    c.clock.advance(minutes=5)
    twice = links.record_download(c, delivered, "B" * 300)
    assert twice is not None
    downloads = twice.events["downloads"]
    assert downloads["count"] == 2 and downloads["first_at"] == first_at.isoformat()
    assert downloads["last_at"] == c.clock.now().isoformat()
    assert downloads["last_user_agent"] == "B" * 200  # bounded
    stored = c.store.get_delivery(delivered.id)
    assert stored is not None and stored.events["downloads"] == downloads
    assert {k for k in stored.events if k != "downloads"} == {k for k in delivered.events if k != "downloads"}


def test_a_link_still_valid_is_not_renewed(c, delivered):
    c.clock.set(links.link_expires(c, delivered))  # the last valid instant
    assert links.renew(c, delivered) == links.Renewal("not-expired")
    assert c.store.get_delivery(delivered.id).events.get("renewals") is None


def test_an_expired_link_gets_a_fresh_delivery_through_the_normal_send_path(c, delivered):
    c.clock.set(links.link_expires(c, delivered) + timedelta(seconds=1))
    now = c.clock.now()
    renewal = links.renew(c, delivered)
    assert renewal.status == "sent" and renewal.retry_after is None
    fresh = c.store.get_delivery(renewal.delivery_id)
    assert fresh is not None and fresh.id != delivered.id
    assert (fresh.run_id, fresh.report_id, fresh.channel, fresh.recipient) == (
        delivered.run_id,
        delivered.report_id,
        "email",
        "a@example.com",
    )
    assert fresh.status == DeliveryStatus.QUEUED and fresh.events == {"renewal_of": delivered.id}
    assert fresh.created_at == now and fresh.updated_at == now
    assert fresh.link_token != delivered.link_token and len(fresh.link_token) == 32  # 24 random bytes
    assert links.link_expires(c, fresh) == now + WEEK  # a full week again
    original = c.store.get_delivery(delivered.id)
    assert original.events["renewals"] == [{"at": now.isoformat(), "delivery_id": fresh.id}]
    assert original.updated_at == now
    queued = [t for t in c.queue.tasks.values() if t.path == SEND_DELIVERY and t.payload["delivery_id"] == fresh.id]
    assert len(queued) == 1 and queued[0].eta is None
    drain(c)
    assert c.store.get_delivery(fresh.id).status == DeliveryStatus.SENT
    mails = c.mailer.sent["a@example.com"]
    assert len(mails) == 2 and fresh.link_token in mails[-1].text


def test_renewals_are_limited_to_one_per_interval_with_the_wait_until_the_next(c, delivered):
    c.clock.set(links.link_expires(c, delivered) + timedelta(seconds=1))
    first = links.renew(c, delivered)
    c.clock.advance(minutes=59, seconds=30)
    limited = links.renew(c, delivered)
    assert limited == links.Renewal("limited", retry_after=30.0)
    c.clock.advance(seconds=29, microseconds=900_000)
    assert links.renew(c, delivered).retry_after == 1.0  # never less than a second
    c.clock.advance(microseconds=100_000)  # exactly one interval after the first renewal
    second = links.renew(c, delivered)
    assert second.status == "sent" and second.delivery_id not in (None, first.delivery_id)
    renewals = c.store.get_delivery(delivered.id).events["renewals"]
    assert [r["delivery_id"] for r in renewals] == [first.delivery_id, second.delivery_id]


def test_the_renewal_interval_is_a_setting(tmp_path):
    c = factories.container(tmp_path, link_renew_interval_seconds=60)
    apply_definitions(c, [factories.report()])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    d = c.store.list_deliveries(run_id=run.id, recipient="a@example.com").items[0]
    c.clock.set(links.link_expires(c, d) + timedelta(seconds=1))
    assert links.renew(c, d).status == "sent"
    c.clock.advance(seconds=20)
    assert links.renew(c, d) == links.Renewal("limited", retry_after=40.0)
    c.clock.advance(seconds=40)
    assert links.renew(c, d).status == "sent"


def test_the_renewal_log_keeps_the_last_twenty(tmp_path):
    c = factories.container(tmp_path, link_renew_interval_seconds=1)
    apply_definitions(c, [factories.report()])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    d = c.store.list_deliveries(run_id=run.id, recipient="a@example.com").items[0]
    c.clock.set(links.link_expires(c, d) + timedelta(seconds=1))
    made = []
    for _ in range(22):
        made.append(links.renew(c, d).delivery_id)
        c.clock.advance(seconds=1)
    assert len(set(made)) == 22  # every renewal is its own delivery
    renewals = c.store.get_delivery(d.id).events["renewals"]
    assert [r["delivery_id"] for r in renewals] == made[-20:]


def test_a_delivery_renewed_twenty_times_before_the_count_existed_gets_a_fresh_id(c, delivered):
    from herald.domain import ids

    # Before renewal_count: ids renew/1..renew/21 were made, and the full list kept 20.
    old = [ids.delivery_id(delivered.id, "renew", str(n)) for n in range(1, 22)]
    c.clock.set(links.link_expires(c, delivered) + timedelta(days=1))
    at = (c.clock.now() - timedelta(days=1)).isoformat()
    log = [{"at": at, "delivery_id": i} for i in old[-20:]]
    c.store.update_delivery(delivered.id, events={**delivered.events, "renewals": log})
    made = [delivered.model_copy(update={"id": i, "link_token": f"t{n}"}) for n, i in enumerate(old)]
    assert c.store.create_deliveries(made) == 21  # they exist, as they did
    renewal = links.renew(c, c.store.get_delivery(delivered.id))
    assert renewal.status == "sent"
    assert renewal.delivery_id == ids.delivery_id(delivered.id, "renew", "22")
    assert renewal.delivery_id not in old and c.store.get_delivery(renewal.delivery_id) is not None


def test_a_vanished_delivery_is_limited_not_renewed(c, delivered):
    gone = delivered.model_copy(update={"id": "no-such-delivery"})
    c.clock.set(links.link_expires(c, delivered) + timedelta(seconds=1))
    assert links.renew(c, gone) == links.Renewal("limited", retry_after=3600.0)


def test_renewal_for_an_unsubscribed_address_is_recorded_suppressed_and_not_sent(c, delivered):
    links.unsubscribe(c, delivered)
    c.clock.set(links.link_expires(c, delivered) + timedelta(seconds=1))
    before = len(c.queue.tasks)
    renewal = links.renew(c, delivered)
    assert renewal.status == "suppressed"
    fresh = c.store.get_delivery(renewal.delivery_id)
    assert fresh is not None and fresh.status == DeliveryStatus.SUPPRESSED
    assert len(c.queue.tasks) == before
    drain(c)
    assert len(c.mailer.sent["a@example.com"]) == 1


def test_a_slack_link_is_renewed_whatever_the_email_suppressions(c, slack_delivered):
    c.store.add_suppression(links.Suppression("c0123", "board-pack", "unsubscribe", c.clock.now()))
    c.clock.set(links.link_expires(c, slack_delivered) + timedelta(seconds=1))
    renewal = links.renew(c, slack_delivered)
    assert renewal.status == "sent"
    fresh = c.store.get_delivery(renewal.delivery_id)
    assert fresh.channel == "slack" and fresh.recipient == "C0123" and fresh.status == DeliveryStatus.QUEUED


def test_unsubscribe_suppresses_the_report_for_the_address_once(c, delivered):
    upper = delivered.model_copy(update={"recipient": "A@Example.com"})
    assert links.unsubscribe(c, upper) is True
    (suppression,) = c.store.list_suppressions()
    assert (suppression.recipient, suppression.scope, suppression.reason) == (
        "a@example.com",
        "board-pack",
        "unsubscribe",
    )
    assert suppression.created_at == c.clock.now()
    first = c.store.get_delivery(delivered.id).events["unsubscribed_at"]
    assert first == c.clock.now().isoformat()
    c.clock.advance(minutes=1)
    assert links.unsubscribe(c, delivered) is False  # repeatable, not new
    assert c.store.get_delivery(delivered.id).events["unsubscribed_at"] == first  # the first time stays
    assert len(c.store.list_suppressions()) == 1
