"""services/alerts.py and services/tasks.py: how Herald's own messages are addressed
(README "Settings": HERALD_ALERT_CHANNELS, HERALD_OWNER_SLACK_CHANNEL, HERALD_OPS_EMAIL;
"Alerts ... then go to the other configured channel") and the task names that make a
redelivered task harmless (deterministic, one per subject and attempt)."""

from __future__ import annotations

from datetime import UTC, datetime

from herald.domain.ids import heartbeat_id
from herald.domain.records import ChannelSend
from herald.ports.clock import FakeClock
from herald.services import alerts, tasks
from herald.services.runs import new_run
from tests import factories

T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def container(tmp_path, **settings):
    return factories.container(tmp_path, FakeClock(T0), **settings)


def test_an_ops_message_goes_to_slack_with_ops_email_as_its_fallback(tmp_path):
    c = container(tmp_path, ops_email="ops@example.com", alert_channels="slack")
    assert alerts.ops_message(
        c, the_id="o1", kind="late_run", report_id="board-pack", run_id="r1", subject="Late", body="b"
    )
    stored = c.store.get_alert("o1")
    assert stored.channels == {"slack": ChannelSend(target="#reporting-ops")}
    assert stored.fallbacks == {"email": "ops@example.com"}
    assert (stored.report_id, stored.run_id, stored.target, stored.created_at) == (
        "board-pack",
        "r1",
        "#reporting-ops",
        T0,
    )
    assert not alerts.ops_message(c, the_id="o1", kind="late_run", report_id=None, run_id=None, subject="x", body="y")


def test_an_ops_message_on_both_channels_has_no_fallback(tmp_path):
    c = container(tmp_path, ops_email="ops@example.com", alert_channels="email,slack")
    alerts.ops_message(c, the_id="o2", kind="k", report_id=None, run_id=None, subject="s", body="b")
    stored = c.store.get_alert("o2")
    assert set(stored.channels) == {"email", "slack"} and stored.fallbacks == {}
    assert stored.channels["email"].target == "ops@example.com"


def test_without_ops_email_ops_messages_are_slack_only(tmp_path):
    c = container(tmp_path, alert_channels="email")
    alerts.ops_message(c, the_id="o3", kind="k", report_id=None, run_id=None, subject="s", body="b")
    stored = c.store.get_alert("o3")
    assert stored.channels == {"slack": ChannelSend(target="#reporting-ops")} and stored.fallbacks == {}


def test_owner_alerts_default_to_email_with_slack_as_fallback(tmp_path):
    c = container(tmp_path, owner_slack_channel="#owners")
    assert alerts.owner_channels(c, "cfo@example.com") == ({"email": "cfo@example.com"}, {"slack": "#owners"})
    c2 = container(tmp_path / "two", alert_channels="slack")
    assert alerts.owner_channels(c2, "cfo@example.com") == ({"email": "cfo@example.com"}, {})  # no Slack channel set


def test_an_owner_alert_is_once_per_kind_report_and_run(tmp_path):
    c = container(tmp_path)
    args = {"kind": "run_failed", "owner": "cfo@example.com", "report_id": "board-pack", "subject": "s", "body": "b"}
    assert alerts.alert_owner(c, run_id="r1", **args)
    assert not alerts.alert_owner(c, run_id="r1", **args)
    assert alerts.alert_owner(c, run_id="r2", **args)
    assert alerts.alert_owner(c, run_id=None, **args)
    assert not alerts.alert_owner(c, run_id=None, **args)
    assert len(c.store.list_alerts()) == 3


def test_a_heartbeat_is_a_ping_notification_whose_url_is_read_later(tmp_path):
    c = container(tmp_path)
    run = new_run(factories.report(), "run-1", "manual", T0)
    assert alerts.heartbeat(c, state="start", run=run, report_id="board-pack", message="started")
    ping = c.store.get_alert(heartbeat_id("start", "run-1"))
    assert ping.kind == "heartbeat" and ping.target == "report" and ping.run_id == "run-1"
    assert ping.subject == "start ping" and ping.body == "started" and ping.created_at == T0
    assert ping.channels == {"heartbeat": ChannelSend(target="")}  # the URL is a credential: not stored here
    assert ping.params == {"state": "start", "url_from": "report", "rid": ""}
    assert not alerts.heartbeat(c, state="start", run=run, report_id="board-pack", message="again")
    assert alerts.heartbeat(c, state="success", run=None, report_id=None, message="m", rid="w-1", url_from="watchdog")
    watchdog = c.store.get_alert(heartbeat_id("success", "w-1"))
    assert watchdog.run_id is None and watchdog.params == {"state": "success", "url_from": "watchdog", "rid": "w-1"}


def test_task_names_are_deterministic_per_subject_and_attempt():
    assert tasks.send_task("d1", 0).name == tasks.send_task("d1", 0).name
    assert tasks.send_task("d1", 0).name != tasks.send_task("d1", 1).name != tasks.send_task("d2", 1).name
    assert (
        tasks.release_run_task("r", "etl", "2026-11-02").name != tasks.release_run_task("r", "etl", "2026-11-03").name
    )
    assert tasks.release_run_task("r", "etl", "p").name.startswith("release-")
    assert tasks.release_run_task("r", "etl", "p").payload == {"run_id": "r"}
    first = tasks.reconcile_task("run", "r", 1, tasks.EXECUTE_RUN, {"run_id": "r"})
    assert first.name != tasks.reconcile_task("run", "r", 2, tasks.EXECUTE_RUN, {"run_id": "r"}).name
    assert first.name.startswith("reconcile-run-") and first.path == tasks.EXECUTE_RUN
    assert (
        tasks.reconcile_task("run", "r", 0, tasks.EXECUTE_RUN, {}).name
        != tasks.reconcile_task("run", "r", 1, tasks.EXECUTE_RUN, {}).name
    )
