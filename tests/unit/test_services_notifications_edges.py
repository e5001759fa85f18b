"""services/notifications.py edges, from its docstring and README "Herald's own messages are
held to the same standard": a channel that gave up is never posted again, the fallback
channel gets its own first attempt and the same retries, a repeat notify queues nothing
twice, a worker whose claim ran out mid-send still answers sent, a sent channel carries no
error, and only a /start ping is held back once the run's final ping (success or fail) went out."""

from __future__ import annotations

from herald.domain.errors import DeliveryError
from herald.domain.ids import heartbeat_id
from herald.domain.records import ChannelSend
from herald.services import alerts
from herald.services import notifications as n
from herald.services.runs import new_run
from tests import factories
from tests.drive import drain
from tests.unit import test_services_notifications as base
from tests.unit.test_services_notifications import OWNER, T0, alert, channel

c = base.c  # the fixture: board-pack with a heartbeat URL, owner Slack channel #owners


def test_a_channel_that_gave_up_is_not_posted_again_by_a_redelivered_task(c):
    c.mailer.script[OWNER] = [DeliveryError("550 no such user", permanent=True)]
    alert(c)
    assert n.send_notification(c, "a1", "email").status == "failed"
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("done")
    state = channel(c, "a1", "email")
    assert (state.status, state.attempts) == ("failed", 1)
    assert OWNER not in c.mailer.sent


def test_sent_channels_carry_no_error(c):
    alert(c, email=ChannelSend(target=OWNER), slack=ChannelSend(target="#owners"))
    assert n.send_notification(c, "a1", "email").status == "sent"
    assert n.send_notification(c, "a1", "slack").status == "sent"
    assert channel(c, "a1", "email").last_error == "" and channel(c, "a1", "slack").last_error == ""


def test_the_fallback_channel_retries_a_transient_failure_and_is_queued_once(c):
    c.mailer.script[OWNER] = [DeliveryError("550 no such user", permanent=True)]
    c.chat.script["#owners"] = [DeliveryError("rate limited", permanent=False)]
    a = alert(c)
    c.store.mutate_alert(a.id, lambda x: {"fallbacks": {"slack": "#owners"}})
    assert n.send_notification(c, "a1", "email").status == "failed"
    queued = set(c.queue.tasks)
    assert not n.notify(c, a)  # a repeat of the alert: the fallback's first attempt is already queued
    assert set(c.queue.tasks) == queued
    drain(c, path="/tasks/notifications/send")
    assert channel(c, "a1", "slack").status == "pending"  # its first attempt failed: a retry is due
    c.clock.advance(seconds=c.settings.alert_retry_delays[0])
    drain(c, path="/tasks/notifications/send")
    state = channel(c, "a1", "slack")
    assert (state.status, state.attempts) == ("sent", 2)
    assert len(c.chat.posted["#owners"]) == 1 and not c.store.get_alert("a1").undelivered


def test_a_worker_whose_claim_ran_out_during_the_send_still_answers_sent(c):
    alert(c)
    real_send = c.mailer.send
    calls = []

    def slow_send(message):
        calls.append(message)
        real_send(message)
        if len(calls) == 1:  # the send outlived its lease: another worker took the channel over
            c.clock.advance(seconds=c.settings.lease_seconds + 1)
            assert n.send_notification(c, "a1", "email").status == "sent"

    c.mailer.send = slow_send
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("sent")  # not a failure to retry
    state = channel(c, "a1", "email")
    assert (state.status, state.attempts) == ("sent", 2)


def heartbeat_run(c, run_id):
    run = new_run(factories.report(), run_id, "manual", T0)
    c.store.create_run(run)
    return run


def test_a_start_ping_after_the_runs_fail_ping_is_not_sent(c):
    run = heartbeat_run(c, "run-3")
    alerts.heartbeat(c, state="fail", run=run, report_id="board-pack", message="failed")
    alerts.heartbeat(c, state="start", run=run, report_id="board-pack", message="start")
    n.send_notification(c, heartbeat_id("fail", "run-3"), "heartbeat")
    n.send_notification(c, heartbeat_id("start", "run-3"), "heartbeat")
    assert channel(c, heartbeat_id("start", "run-3"), "heartbeat").last_error == "the run's final ping was sent first"
    assert [s for _, s, _ in c.heartbeat.pings] == ["fail"]


def test_a_final_ping_is_sent_even_after_another_final_ping_of_the_run(c):
    # e.g. a run that failed, then succeeded after its failed deliveries were resent.
    run = heartbeat_run(c, "run-4")
    alerts.heartbeat(c, state="fail", run=run, report_id="board-pack", message="failed")
    n.send_notification(c, heartbeat_id("fail", "run-4"), "heartbeat")
    c.clock.advance(minutes=10)
    alerts.heartbeat(c, state="success", run=run, report_id="board-pack", message="resent")
    assert n.send_notification(c, heartbeat_id("success", "run-4"), "heartbeat").status == "sent"
    assert [s for _, s, _ in c.heartbeat.pings] == ["fail", "success"]
    assert channel(c, heartbeat_id("success", "run-4"), "heartbeat").last_error == ""
