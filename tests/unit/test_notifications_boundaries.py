"""services/notifications.py, tasks.py and definitions.py boundaries, from their docstrings:
``notify`` is idempotent by the alert's id and a repeat queues again only the channels
still waiting for their first attempt (never a channel already sent, nor one whose first
attempt failed and waits for its retry), and a report has a first fire time only when it
has a schedule and is enabled (README "Report definitions": ``herald apply`` prints the
next fire times; a disabled report never fires)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.records import Alert, ChannelSend
from herald.ports.clock import FakeClock
from herald.services import definitions
from herald.services import notifications as n
from herald.services.scheduling import apply_definitions
from herald.services.tasks import SEND_NOTIFICATION
from tests import factories

T0 = factories.T0
OWNER = "cfo@example.com"


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, FakeClock(T0), owner_slack_channel="#owners")
    apply_definitions(container, [factories.report()])
    return container


def owner_alert():
    return Alert(
        id="a1",
        kind="run_failed",
        target=OWNER,
        report_id="board-pack",
        subject="Board pack failed",
        body="it broke",
        created_at=T0,
        channels={"email": ChannelSend(target=OWNER), "slack": ChannelSend(target="#owners")},
    )


def lose_queued_tasks(c):
    """The queue forgot every task (gcp: the record was written, the enqueue was lost)."""
    c.queue.tasks.clear()
    c.queue.pending.clear()


def queued_channels(c):
    return sorted(
        (t.payload["alert_id"], t.payload["channel"]) for t in c.queue.tasks.values() if t.path == SEND_NOTIFICATION
    )


# A repeated notify --------------------------------------------------------------------------
def test_a_repeat_queues_only_the_channel_still_waiting_for_its_first_attempt(c):
    assert n.notify(c, owner_alert())
    assert queued_channels(c) == [("a1", "email"), ("a1", "slack")]
    assert n.send_notification(c, "a1", "email").status == "sent"
    lose_queued_tasks(c)
    assert n.notify(c, owner_alert()) is False  # the same alert again
    assert queued_channels(c) == [("a1", "slack")]  # e-mail went out already
    assert len(c.mailer.sent[OWNER]) == 1


def test_a_repeat_does_not_queue_a_first_attempt_again_for_a_channel_waiting_to_retry(c):
    c.chat.script["#owners"] = [DeliveryError("rate limited", permanent=False)]
    assert n.notify(c, owner_alert())
    assert n.send_notification(c, "a1", "email").status == "sent"
    assert n.send_notification(c, "a1", "slack").status == "retrying"
    state = c.store.get_alert("a1").channels["slack"]
    assert (state.status, state.attempts) == ("pending", 1)  # its retry is queued, and due later
    lose_queued_tasks(c)
    assert n.notify(c, owner_alert()) is False
    assert queued_channels(c) == []  # nothing waits for a first attempt
    assert c.chat.posted["#owners"] == []


# First fire times -----------------------------------------------------------------------------
NOW = datetime(2026, 11, 2, 6, 59, tzinfo=UTC)


def test_only_an_enabled_scheduled_report_has_a_first_fire_time():
    scheduled = factories.report()  # 07:00 Europe/London: GMT in November
    assert definitions.initial_fire_time(scheduled, NOW) == datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    assert definitions.initial_fire_time(factories.report(enabled=False), NOW) is None
    assert definitions.initial_fire_time(factories.report(schedule=None), NOW) is None


def test_the_plan_shows_no_fire_time_for_a_disabled_or_unscheduled_report():
    planned = definitions.plan(
        [],
        [
            factories.report(),
            factories.report(id="off-pack", enabled=False),
            factories.report(id="manual-pack", schedule=None),
        ],
        NOW,
    )
    assert [(ch.action, ch.definition.id, ch.next_fire_at) for ch in planned.changes] == [
        ("add", "board-pack", datetime(2026, 11, 2, 7, 0, tzinfo=UTC)),
        ("add", "off-pack", None),
        ("add", "manual-pack", None),
    ]
