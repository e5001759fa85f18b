"""services/notifications.py: what a notification task answers and records (README
"Herald's own messages are held to the same standard": a channel is claimed and posts
once, alerts retry at HERALD_ALERT_RETRY_DELAYS, then go to the other configured channel,
then show as undelivered; heartbeat pings retry at HERALD_HEARTBEAT_RETRY_DELAYS and
``heartbeat_sent`` means the monitor acknowledged)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.ids import heartbeat_id
from herald.domain.records import Alert, ChannelSend
from herald.ports.clock import FakeClock
from herald.services import alerts
from herald.services import notifications as n
from herald.services.scheduling import apply_definitions
from tests import factories

T0 = factories.T0
OWNER = "cfo@example.com"


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, FakeClock(T0), owner_slack_channel="#owners")
    apply_definitions(container, [factories.report(heartbeat_url="https://hc.example/ping/abc")])
    return container


def alert(c, the_id="a1", **channels):
    a = Alert(
        id=the_id,
        kind="run_failed",
        target=OWNER,
        report_id="board-pack",
        subject="Board pack failed",
        body="it <broke> & stopped",
        created_at=T0,
        channels=channels or {"email": ChannelSend(target=OWNER)},
    )
    assert n.notify(c, a)
    return a


def channel(c, the_id, name):
    return c.store.get_alert(the_id).channels[name]


def test_an_email_alert_is_sent_once_with_its_subject_and_escaped_html(c):
    alert(c)
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("sent")
    (mail,) = c.mailer.sent[OWNER]
    assert mail.subject == "[Herald] Board pack failed" and mail.text == "it <broke> & stopped"
    assert mail.html == "<pre>it &lt;broke&gt; &amp; stopped</pre>"
    assert mail.custom_args == {"alert_id": "a1"} and mail.categories == ("herald-alert",)
    assert mail.idempotency_key == "a1"
    state = channel(c, "a1", "email")
    assert (state.status, state.attempts, state.sent_at, state.lease_until) == ("sent", 1, T0, None)
    assert c.store.get_alert("a1").sent
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("done")  # a redelivered task
    assert len(c.mailer.sent[OWNER]) == 1


def test_a_slack_alert_is_inert_text(c):
    alert(c, slack=ChannelSend(target="#owners"))
    assert n.send_notification(c, "a1", "slack").status == "sent"
    (post,) = c.chat.posted["#owners"]
    assert post.text == "*Board pack failed*\nit &lt;broke&gt; &amp; stopped"
    assert post.idempotency_key == "a1-slack"


def test_tasks_for_unknown_alerts_or_channels_answer_unknown(c):
    alert(c)
    assert n.send_notification(c, "nope", "email") == n.NotifyOutcome("unknown")
    assert n.send_notification(c, "a1", "slack") == n.NotifyOutcome("unknown")


def test_a_channel_being_sent_answers_leased_with_a_short_retry(c):
    alert(c)
    c.store.mutate_alert(
        "a1",
        lambda a: {
            "channels": {
                "email": ChannelSend(target=OWNER, status="sending", attempts=1, lease_until=T0 + timedelta(seconds=2))
            }
        },
    )
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("leased", retry_after=3.0)
    c.store.mutate_alert(
        "a1",
        lambda a: {
            "channels": {
                "email": ChannelSend(target=OWNER, status="sending", attempts=1, lease_until=T0 + timedelta(minutes=2))
            }
        },
    )
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("leased", retry_after=5.0)  # never longer than 5 s
    c.clock.set(T0 + timedelta(minutes=2))  # the lease ends now: taken over
    assert n.send_notification(c, "a1", "email").status == "sent"


def test_a_channel_not_due_yet_answers_when_it_is(c):
    alert(c)
    c.store.mutate_alert(
        "a1",
        lambda a: {
            "channels": {"email": ChannelSend(target=OWNER, attempts=1, next_attempt_at=T0 + timedelta(seconds=90))}
        },
    )
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("not-due", retry_after=90.0)
    c.clock.set(T0 + timedelta(seconds=90))  # due exactly now
    assert n.send_notification(c, "a1", "email").status == "sent"


def test_a_transient_failure_retries_on_the_alert_schedule(c):
    c.mailer.script[OWNER] = [DeliveryError("x" * 400, permanent=False)]
    alert(c)
    assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("retrying")
    state = channel(c, "a1", "email")
    assert state.status == "pending" and state.lease_until is None and state.attempts == 1
    assert state.next_attempt_at == T0 + timedelta(seconds=60) and state.last_error == "x" * 300
    retry = [t for t in c.queue.tasks.values() if t.eta is not None]
    assert [(t.payload, t.eta) for t in retry] == [({"alert_id": "a1", "channel": "email"}, T0 + timedelta(seconds=60))]
    c.clock.set(T0 + timedelta(seconds=60))
    assert n.send_notification(c, "a1", "email").status == "sent"


def test_a_provider_retry_after_is_honoured(c):
    c.mailer.script[OWNER] = [DeliveryError("slow down", permanent=False, retry_after=200)]
    alert(c)
    n.send_notification(c, "a1", "email")
    assert channel(c, "a1", "email").next_attempt_at == T0 + timedelta(seconds=200)


def test_heartbeats_retry_on_their_own_short_schedule(c):
    c.heartbeat.script = [DeliveryError("503", permanent=False)] * 4
    alerts.heartbeat(c, state="start", run=None, report_id="board-pack", message="m", rid="r1")
    the_id = heartbeat_id("start", "r1")
    waits = []
    for _ in range(3):
        assert n.send_notification(c, the_id, "heartbeat").status == "retrying"
        due = channel(c, the_id, "heartbeat").next_attempt_at
        waits.append((due - c.clock.now()).total_seconds())
        c.clock.set(due)
    assert waits == [5.0, 15.0, 30.0]
    assert n.send_notification(c, the_id, "heartbeat") == n.NotifyOutcome("failed")


def test_a_permanent_failure_moves_to_the_fallback_channel_then_undelivered(c, caplog):
    c.mailer.script[OWNER] = [DeliveryError("550 no such user", permanent=True)]
    c.chat.script["#owners"] = [DeliveryError("channel_not_found", permanent=True)]
    a = alert(c)
    c.store.mutate_alert(a.id, lambda x: {"fallbacks": {"slack": "#owners"}})
    with caplog.at_level(logging.ERROR, logger="herald.services.notifications"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        assert n.send_notification(c, "a1", "email") == n.NotifyOutcome("failed")
    stored = c.store.get_alert("a1")
    assert stored.channels["email"].status == "failed" and stored.channels["email"].next_attempt_at is None
    assert stored.channels["slack"] == ChannelSend(target="#owners") and not stored.undelivered
    fallback = [t for t in c.queue.tasks.values() if t.payload == {"alert_id": "a1", "channel": "slack"}]
    assert len(fallback) == 1 and fallback[0].eta is None
    (gave_up,) = [r for r in caplog.records if r.name == "herald.services.notifications"]
    assert gave_up.getMessage() == "notification channel gave up; trying the other channel"
    assert gave_up.alert_id == "a1" and gave_up.channel == "email"  # type: ignore[attr-defined]
    assert gave_up.fallback == [fallback[0].name]  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="herald.services.notifications"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        assert n.send_notification(c, "a1", "slack") == n.NotifyOutcome("failed")
    assert c.store.get_alert("a1").undelivered
    (lost,) = [r for r in caplog.records if r.name == "herald.services.notifications"]
    assert lost.getMessage() == "notification undelivered on every channel"
    assert (lost.alert_id, lost.kind) == ("a1", "run_failed")  # type: ignore[attr-defined]


def test_one_channel_failing_while_another_is_pending_is_not_yet_a_fallback(c):
    c.mailer.script[OWNER] = [DeliveryError("550", permanent=True)]
    alert(c, email=ChannelSend(target=OWNER), slack=ChannelSend(target="#owners"))
    c.store.mutate_alert("a1", lambda x: {"fallbacks": {"other": "x"}})
    assert n.send_notification(c, "a1", "email").status == "failed"
    stored = c.store.get_alert("a1")
    assert set(stored.channels) == {"email", "slack"} and not stored.undelivered


def test_a_channel_that_already_sent_keeps_the_alert_delivered(c):
    c.chat.script["#owners"] = [DeliveryError("gone", permanent=True)]
    alert(c, email=ChannelSend(target=OWNER), slack=ChannelSend(target="#owners"))
    n.send_notification(c, "a1", "email")
    assert n.send_notification(c, "a1", "slack").status == "failed"
    assert not c.store.get_alert("a1").undelivered


def test_an_unexpected_error_is_transient(c):
    def boom(message):
        raise RuntimeError("socket closed")

    c.mailer.send = boom
    alert(c)
    assert n.send_notification(c, "a1", "email").status == "retrying"
    assert channel(c, "a1", "email").last_error == "RuntimeError: socket closed"


def test_an_unknown_channel_fails_permanently(c):
    alert(c, pigeon=ChannelSend(target="loft"))
    assert n.send_notification(c, "a1", "pigeon").status == "failed"
    assert channel(c, "a1", "pigeon").last_error == "unknown notification channel 'pigeon'"


def test_a_failed_attempt_logs_its_context(c, caplog):
    c.mailer.script[OWNER] = [DeliveryError("timeout", permanent=False)]
    alert(c)
    with caplog.at_level(logging.WARNING, logger="herald.services.notifications"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        n.send_notification(c, "a1", "email")
    (line,) = [r for r in caplog.records if r.getMessage() == "notification attempt failed"]
    assert (line.alert_id, line.kind, line.channel, line.attempt, line.permanent, line.error) == (  # type: ignore[attr-defined]
        "a1",
        "run_failed",
        "email",
        1,
        False,
        "timeout",
    )


def test_a_late_failure_after_another_worker_took_over_changes_nothing(c):
    alert(c)
    claimed = c.store.mutate_alert(
        "a1", lambda a: {"channels": {"email": ChannelSend(target=OWNER, status="sending", attempts=1)}}
    )
    c.store.mutate_alert(
        "a1", lambda a: {"channels": {"email": ChannelSend(target=OWNER, status="sending", attempts=2)}}
    )
    outcome = n._failed(c, claimed, "email", 1, DeliveryError("late", permanent=False))
    assert outcome == n.NotifyOutcome("done")
    assert channel(c, "a1", "email").attempts == 2 and channel(c, "a1", "email").last_error == ""


# Heartbeat pings -------------------------------------------------------------------------
def test_a_ping_reads_the_report_url_when_sent_and_says_why_when_there_is_none(c):
    alerts.heartbeat(c, state="fail", run=None, report_id="board-pack", message="outcome", rid="r9")
    assert n.send_notification(c, heartbeat_id("fail", "r9"), "heartbeat").status == "sent"
    assert c.heartbeat.pings == [("https://hc.example/ping/abc", "fail", "r9")]
    assert c.heartbeat.messages == ["outcome"]
    c.store.save_report(factories.report(), None)  # the URL was removed meanwhile
    alerts.heartbeat(c, state="success", run=None, report_id="board-pack", message="m", rid="r10")
    later = heartbeat_id("success", "r10")
    assert n.send_notification(c, later, "heartbeat").status == "sent"
    assert channel(c, later, "heartbeat").last_error == "no heartbeat URL any more"
    assert len(c.heartbeat.pings) == 1


def test_a_ping_of_a_report_no_longer_stored_is_not_sent(c):
    alerts.heartbeat(c, state="success", run=None, report_id="gone", message="m", rid="r1")
    ping = heartbeat_id("success", "r1")
    n.send_notification(c, ping, "heartbeat")
    assert channel(c, ping, "heartbeat").last_error == "no heartbeat URL any more" and c.heartbeat.pings == []


def test_a_ping_without_a_state_is_a_success_ping(c):
    a = Alert(
        id="hb-raw",
        kind="heartbeat",
        target="report",
        report_id="board-pack",
        subject="ping",
        body="",
        created_at=T0,
        channels={"heartbeat": ChannelSend(target="")},
    )
    n.notify(c, a)
    n.send_notification(c, "hb-raw", "heartbeat")
    assert c.heartbeat.pings == [("https://hc.example/ping/abc", "success", "hb-raw")]  # no rid, no run: its id


def test_a_start_ping_after_the_runs_final_ping_is_not_sent(c):
    from herald.services.runs import new_run

    run = new_run(factories.report(), "run-1", "manual", T0)
    c.store.create_run(run)
    alerts.heartbeat(c, state="success", run=run, report_id="board-pack", message="done")
    alerts.heartbeat(c, state="start", run=run, report_id="board-pack", message="start")
    n.send_notification(c, heartbeat_id("success", "run-1"), "heartbeat")
    assert c.store.get_run("run-1").heartbeat_sent  # the monitor acknowledged the final ping
    n.send_notification(c, heartbeat_id("start", "run-1"), "heartbeat")
    assert channel(c, heartbeat_id("start", "run-1"), "heartbeat").last_error == "the run's final ping was sent first"
    assert c.heartbeat.pings == [("https://hc.example/ping/abc", "success", "run-1")]


def test_a_start_ping_before_the_final_one_is_sent_and_is_no_acknowledgement(c):
    from herald.services.runs import new_run

    run = new_run(factories.report(), "run-2", "manual", T0)
    c.store.create_run(run)
    alerts.heartbeat(c, state="start", run=run, report_id="board-pack", message="start")
    alerts.heartbeat(c, state="fail", run=run, report_id="board-pack", message="failed")
    n.send_notification(c, heartbeat_id("start", "run-2"), "heartbeat")
    assert not c.store.get_run("run-2").heartbeat_sent
    n.send_notification(c, heartbeat_id("fail", "run-2"), "heartbeat")
    assert [s for _, s, _ in c.heartbeat.pings] == ["start", "fail"]
    assert c.store.get_run("run-2").heartbeat_sent
