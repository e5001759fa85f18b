"""services/watchdog.py: what ops is told, word for word (README "Monitoring": one alert
per late or missed slot, stuck run or dead tick to HERALD_OPS_SLACK_CHANNEL; watchdog.py's
docstring: the late, stuck and tick messages, the cap with one summary, the watchdog's own
heartbeat). Complements tests/unit/test_watchdog.py, which covers timing and incidents."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.clock import FakeClock
from herald.services import watchdog as wd
from herald.services.runs import new_run
from herald.services.scheduling import apply_definitions
from herald.services.tasks import SEND_NOTIFICATION
from tests import factories
from tests.drive import drain

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # 07:00 London (GMT in November)
TOMORROW = SLOT + timedelta(days=1)
INCIDENTS = ("incident_late", "incident_stuck", "incident_tick")


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, FakeClock(SLOT))
    apply_definitions(container, [factories.report()])
    container.store.save_report(factories.report(), TOMORROW)  # the tick handled today's slot
    return container


def incidents(c, kind=None):
    found = [a for a in c.store.list_alerts(limit=1000) if a.kind in INCIDENTS]
    return sorted((a for a in found if kind is None or a.kind == kind), key=lambda a: a.subject)


def make_run(c, run_id, status, *, report_id="board-pack", trigger="schedule", slot=SLOT, updated=None, **fields):
    run = new_run(factories.report(id=report_id), run_id, trigger, slot, slot=slot if trigger == "schedule" else None)
    run = run.model_copy(update={"status": status, "updated_at": updated or slot, **fields})
    assert c.store.create_run(run)
    return run


def deliver(c, run_id, recipient, status):
    now = c.clock.now()
    d = Delivery(
        id=f"{run_id}/{recipient}",
        run_id=run_id,
        report_id="board-pack",
        channel="email",
        recipient=recipient,
        status=status,
        created_at=now,
        updated_at=now,
    )
    c.store.create_deliveries([d])


# Late slots ---------------------------------------------------------------------------------
def test_a_late_delivering_run_says_where_it_is(c):
    make_run(c, "r1", RunStatus.DELIVERING, started_at=SLOT + timedelta(minutes=1))
    for recipient, status in (("a@x.com", DeliveryStatus.SENT), ("b@x.com", DeliveryStatus.QUEUED)):
        deliver(c, "r1", recipient, status)
    deliver(c, "r1", "c@x.com", DeliveryStatus.SENT)
    result = wd.run_watchdog(c, SLOT + timedelta(minutes=25))
    assert result.posted == 1 and len(result.new) == 1 and result.found == result.new
    (late,) = incidents(c)
    assert late.subject == "Late: Board pack for 2026-11-02 07:00 UTC is delivering"
    assert late.body.splitlines() == [
        "Report: Board pack (board-pack), owner cfo@example.com",
        "Slot: 2026-11-02 07:00 GMT (Europe/London) = 2026-11-02 07:00 UTC",
        "State: delivering, 25 min after the slot (grace 20 min)",
        "Run: r1, created 2026-11-02 07:00 UTC",
        "Started: 2026-11-02 07:01 UTC",
        "Deliveries: queued 1, sent 2",
    ]
    assert late.run_id == "r1" and late.report_id == "board-pack" and late.target == "#reporting-ops"


def test_durations_read_as_minutes_then_hours_and_minutes(c):
    make_run(c, "r1", RunStatus.RENDERING)
    wd.run_watchdog(c, SLOT + timedelta(minutes=61, seconds=59))
    (late,) = incidents(c)
    assert late.body.splitlines()[2] == "State: rendering, 1h01m after the slot (grace 20 min)"
    assert late.body.splitlines()[3:] == ["Run: r1, created 2026-11-02 07:00 UTC"]  # nothing else known
    assert wd._minutes(timedelta(minutes=59, seconds=59)) == "59 min"
    assert wd._minutes(timedelta(minutes=60)) == "1h00m"
    assert wd._minutes(timedelta(hours=2, minutes=5)) == "2h05m"
    assert wd._minutes(timedelta(hours=25, minutes=1)) == "25h01m"


def test_a_report_whose_schedule_was_removed_is_told_in_utc(c):
    c.store.save_report(factories.report(schedule=None), None)
    make_run(c, "r1", RunStatus.PENDING)
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    (late,) = incidents(c)
    assert late.body.splitlines()[1] == "Slot: 2026-11-02 07:00 UTC (UTC) = 2026-11-02 07:00 UTC"


def test_a_per_report_grace_is_told(c):
    c.store.save_report(factories.report(watchdog_grace="1h30m"), TOMORROW)
    make_run(c, "r1", RunStatus.PENDING)
    wd.run_watchdog(c, SLOT + timedelta(minutes=89))
    assert incidents(c) == []
    wd.run_watchdog(c, SLOT + timedelta(minutes=91))
    (late,) = incidents(c)
    assert late.body.splitlines()[2] == "State: pending, 1h31m after the slot (grace 1h30m)"


def test_manual_runs_are_never_late_only_stuck(c):
    make_run(c, "m1", RunStatus.RENDERING, trigger="manual")
    wd.run_watchdog(c, SLOT + timedelta(hours=1))
    assert incidents(c) == []


def test_a_missed_slot_says_how_to_send_it_now(c):
    make_run(c, "r1", RunStatus.MISSED, created_at=SLOT + timedelta(minutes=15))
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    (late,) = incidents(c)
    assert late.subject == "Late: Board pack for 2026-11-02 07:00 UTC is missed"
    assert late.body.splitlines()[2:] == [
        "State: missed, 21 min after the slot (grace 20 min)",
        "Run: r1: the tick reached this slot only at 2026-11-02 07:15 UTC, past the misfire window (600s),"
        " so nothing was sent.",
        "Send it now: herald run board-pack  (or POST /api/reports/board-pack/runs)",
    ]
    assert late.run_id == "r1"


def test_missed_slots_inside_their_grace_or_of_unknown_reports_wait(c):
    make_run(c, "r1", RunStatus.MISSED, created_at=SLOT + timedelta(minutes=15))
    make_run(c, "gone", RunStatus.MISSED, report_id="deleted", created_at=SLOT + timedelta(minutes=15))
    wd.run_watchdog(c, SLOT + timedelta(minutes=20))  # exactly the grace: not late yet
    assert incidents(c) == []
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    assert [a.run_id for a in incidents(c)] == ["r1"]


def test_missed_runs_are_looked_at_for_two_days(c):
    now = SLOT + timedelta(days=2, minutes=30)
    make_run(c, "old", RunStatus.MISSED, created_at=now - timedelta(days=2, seconds=1))
    make_run(
        c, "edge", RunStatus.MISSED, slot=SLOT + timedelta(minutes=1), created_at=now - timedelta(days=2)
    )  # created exactly two days ago: still looked at
    wd.run_watchdog(c, now)
    (late,) = incidents(c)
    assert late.run_id == "edge"


def test_missed_runs_past_the_first_page_are_found(c):
    for i in range(wd.PAGE + 1):
        make_run(c, f"r{i:04d}", RunStatus.MISSED, slot=SLOT - timedelta(minutes=i), created_at=SLOT)
    result = wd.run_watchdog(c, SLOT + timedelta(hours=1))
    assert len(result.found) == wd.PAGE + 1


def test_a_slot_the_tick_never_handled_asks_whether_the_tick_runs(c):
    c.store.save_report(factories.report(), SLOT)  # next fire time still at the slot
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    (late,) = incidents(c)
    assert late.subject == "Late: Board pack for 2026-11-02 07:00 UTC is not started"
    assert late.body.splitlines()[2:] == [
        "State: not started, 21 min after the slot (grace 20 min)",
        "No run was created: the tick has not handled this schedule since 2026-11-02 07:00 UTC. "
        "Is the tick running (Cloud Scheduler job / `herald serve`)?",
    ]
    assert late.run_id is None


def test_overdue_schedules_are_read_from_a_minute_back_at_most(c):
    # A one-minute grace: the schedule is overdue 90 s after its slot. The query looks back
    # min(global grace, 1 minute), so it finds it.
    c.store.save_report(factories.report(watchdog_grace="1m"), SLOT)
    wd.run_watchdog(c, SLOT + timedelta(seconds=90))
    assert [a.subject for a in incidents(c)] == ["Late: Board pack for 2026-11-02 07:00 UTC is not started"]


def test_a_disabled_or_unscheduled_overdue_report_is_not_late(c):
    c.store.save_report(factories.report(schedule=None), SLOT)
    c.store.save_report(factories.report(id="later"), SLOT)
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    assert [a.report_id for a in incidents(c)] == ["later"]  # the report without a schedule is skipped


# Stuck runs ---------------------------------------------------------------------------------
def test_a_stuck_run_says_since_when(c):
    make_run(c, "m1", RunStatus.RENDERING, trigger="manual", slot=SLOT, updated=SLOT)
    now = SLOT + timedelta(hours=2)
    wd.run_watchdog(c, now)  # exactly the limit: not stuck yet
    assert incidents(c) == []
    wd.run_watchdog(c, now + timedelta(minutes=1))
    (stuck,) = incidents(c)
    assert stuck.kind == "incident_stuck"
    assert stuck.subject == "Stuck: run m1 of board-pack has been rendering since 07:00 UTC"
    assert stuck.body.splitlines() == [
        "Report: board-pack",
        "State: rendering for 2h01m",
        "Run: m1, created 2026-11-02 07:00 UTC",
    ]
    assert stuck.run_id == "m1" and stuck.report_id == "board-pack"


def test_a_stuck_run_of_a_deleted_report_is_still_told(c):
    make_run(c, "m1", RunStatus.PENDING, report_id="deleted", trigger="manual")
    wd.run_watchdog(c, SLOT + timedelta(hours=3))
    (stuck,) = incidents(c)
    assert stuck.subject.startswith("Stuck: run m1 of deleted has been pending since ")


def test_two_stuck_runs_in_the_same_state_are_two_findings(c):
    make_run(c, "m1", RunStatus.RENDERING, trigger="manual")
    make_run(c, "m2", RunStatus.RENDERING, trigger="manual")
    result = wd.run_watchdog(c, SLOT + timedelta(hours=3))
    assert len(result.found) == 2
    (stuck,) = incidents(c)  # one incident per report and cause, holding both runs
    assert set(stuck.params) == {"m1", "m2"} and set(stuck.params.values()) == {"rendering"}


def test_a_waiting_run_is_stuck_only_past_its_longest_dependency_wait(c):
    depends = [
        {"job": "etl", "period": "same", "wait_up_to": "1h", "on_timeout": "fail"},
        {"job": "crm", "period": "same", "wait_up_to": "3h", "on_timeout": "send_anyway"},
    ]
    c.store.save_report(factories.report(depends_on=depends), TOMORROW)
    make_run(c, "m1", RunStatus.WAITING, trigger="manual")
    wd.run_watchdog(c, SLOT + timedelta(hours=5))  # 2 h + 3 h: not yet
    assert incidents(c) == []
    wd.run_watchdog(c, SLOT + timedelta(hours=5, minutes=1))
    (stuck,) = incidents(c)
    lines = stuck.body.splitlines()
    assert lines[:3] == ["Report: board-pack", "State: waiting for 5h01m", "Run: m1, created 2026-11-02 07:00 UTC"]
    assert lines[3].startswith("waiting for etl ") and "(then fail); waiting for crm " in lines[3]


def test_a_waiting_run_of_a_report_without_dependencies_uses_the_plain_limit(c):
    make_run(c, "m1", RunStatus.WAITING, trigger="manual")
    wd.run_watchdog(c, SLOT + timedelta(hours=2, minutes=1))
    (stuck,) = incidents(c)
    assert stuck.body.splitlines()[3:] == ["waiting"]  # nothing it waits for is known


# The tick -----------------------------------------------------------------------------------
def test_no_ticker_file_means_nothing_to_say(c):
    assert wd.file_tick_health(c.settings) is None
    assert wd.run_watchdog(c, SLOT).found == []


def test_record_tick_keeps_the_last_successful_tick_in_utc(c):
    from zoneinfo import ZoneInfo

    wd.record_tick(c.settings, SLOT.astimezone(ZoneInfo("Asia/Tokyo")))
    assert (c.settings.data_dir / wd.TICK_FILE).read_text() == "2026-11-02T07:00:00+00:00"
    health = wd.file_tick_health(c.settings)
    assert health == wd.FileTickHealth(SLOT)
    assert [p.name for p in c.settings.data_dir.iterdir() if p.name.startswith("ticker")] == ["ticker.last"]


def test_a_silent_tick_is_told_after_three_ticks_or_three_minutes(c):
    wd.record_tick(c.settings, SLOT)
    assert wd.run_watchdog(c, SLOT + timedelta(seconds=180)).found == []
    wd.run_watchdog(c, SLOT + timedelta(seconds=181))
    (tick,) = incidents(c)
    assert tick.kind == "incident_tick" and tick.report_id is None and tick.run_id is None
    assert tick.subject == "The scheduler tick has not run since 2026-11-02 07:00 UTC (state ENABLED)"
    assert tick.body.splitlines() == [
        "Tick state: ENABLED; last attempt: 2026-11-02 07:00 UTC; last result: ok",
        "No scheduled report starts while the tick is down; late slots are alerted one by one.",
    ]
    assert tick.params == {"tick": "silent (ENABLED)"}


def test_a_slower_ticker_is_given_three_of_its_periods(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT), tick_seconds=120)
    wd.record_tick(c.settings, SLOT)
    assert wd.run_watchdog(c, SLOT + timedelta(seconds=360)).found == []
    assert len(wd.run_watchdog(c, SLOT + timedelta(seconds=361)).found) == 1


def test_an_unreadable_ticker_file_is_a_silent_tick_of_unknown_result(c):
    (c.settings.data_dir / wd.TICK_FILE).write_text("yesterday-ish")
    assert wd.file_tick_health(c.settings) == wd.FileTickHealth(None, None, "UNREADABLE")
    wd.run_watchdog(c, SLOT)
    (tick,) = incidents(c)
    assert tick.subject == "The scheduler tick has not run since never (state UNREADABLE)"
    assert tick.body.splitlines()[0] == "Tick state: UNREADABLE; last attempt: never; last result: unknown"


def test_a_failing_tick_names_its_error(c):
    failing = wd.FileTickHealth(SLOT - timedelta(hours=1), False, "ENABLED", "PERMISSION_DENIED: no")
    wd.run_watchdog(c, SLOT, tick_health=lambda: failing)
    (tick,) = incidents(c)
    assert tick.subject == "The scheduler tick is failing (PERMISSION_DENIED: no)"
    assert tick.body.splitlines()[0] == (
        "Tick state: ENABLED; last attempt: 2026-11-02 06:00 UTC; last result: failed (PERMISSION_DENIED: no)"
    )
    assert tick.params == {"tick": "failing: PERMISSION_DENIED: no"}


def test_a_failing_tick_without_a_message_says_error(c):
    wd.run_watchdog(c, SLOT, tick_health=lambda: wd.FileTickHealth(SLOT - timedelta(hours=1), False, "ENABLED"))
    (tick,) = incidents(c)
    assert tick.subject == "The scheduler tick is failing (error)"
    assert tick.body.splitlines()[0].endswith("last result: failed")


def test_a_paused_tick_is_silent_whatever_its_last_result(c):
    paused = wd.FileTickHealth(SLOT - timedelta(hours=1), False, "PAUSED", "boom")
    wd.run_watchdog(c, SLOT, tick_health=lambda: paused)
    (tick,) = incidents(c)
    assert tick.subject == "The scheduler tick has not run since 2026-11-02 06:00 UTC (state PAUSED)"
    assert tick.params == {"tick": "failing: boom"}


def test_the_tick_coming_back_closes_its_incident_once(c):
    wd.record_tick(c.settings, SLOT - timedelta(hours=1))
    wd.run_watchdog(c, SLOT)
    wd.record_tick(c.settings, SLOT + timedelta(minutes=1))
    wd.run_watchdog(c, SLOT + timedelta(minutes=2))
    resolved = [a for a in c.store.list_alerts(limit=100) if a.kind == "incident_tick_resolved"]
    assert len(resolved) == 1
    assert resolved[0].subject.startswith("Resolved: the scheduler tick: ")
    assert resolved[0].subject.endswith("; the tick is running again (last tick 2026-11-02 07:01 UTC)")
    wd.run_watchdog(c, SLOT + timedelta(minutes=3))
    assert len([a for a in c.store.list_alerts(limit=100) if a.kind == "incident_tick_resolved"]) == 1


def test_tick_health_that_cannot_be_read_is_logged_not_alerted(c, caplog):
    def broken():
        raise RuntimeError("scheduler API down")

    with caplog.at_level(logging.WARNING, logger="herald.services.watchdog"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        assert wd.run_watchdog(c, SLOT, tick_health=broken).found == []
    (line,) = [r for r in caplog.records if r.name == "herald.services.watchdog"]
    assert line.getMessage() == "watchdog: tick health unavailable"
    assert line.error == "scheduler API down"  # type: ignore[attr-defined]


def test_the_containers_tick_health_is_used_when_none_is_given(c):
    c.tick_health = lambda: wd.FileTickHealth(None, None, "NOT_FOUND")
    wd.run_watchdog(c, SLOT)
    (tick,) = incidents(c)
    assert tick.subject == "The scheduler tick has not run since never (state NOT_FOUND)"


# The cap and the summary --------------------------------------------------------------------
def test_past_the_cap_new_incidents_are_one_summary(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT), watchdog_max_alerts=1)
    ids = [f"r{i:03d}" for i in range(103)]
    for report_id in ids:
        c.store.save_report(factories.report(id=report_id, name=f"Report {report_id}"), SLOT)
    result = wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    assert len(result.new) == 103 and len(result.found) == 103 and result.posted == 2
    (summary,) = [a for a in c.store.list_alerts(limit=1000) if a.kind == "watchdog_summary"]
    assert summary.subject == "…and 102 more watchdog alerts"
    lines = summary.body.splitlines()
    assert len(lines) == 101 and lines[-1] == "(and 2 more)"
    assert lines[0].startswith("- Late: Report r") and lines[0].endswith(" for 2026-11-02 07:00 UTC is not started")
    assert summary.target == "#reporting-ops" and summary.report_id is None and summary.run_id is None
    again = wd.run_watchdog(c, SLOT + timedelta(minutes=22))
    assert again.new == [] and again.posted == 0


def test_a_summary_of_exactly_a_hundred_has_no_tail(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT), watchdog_max_alerts=1)
    for i in range(101):
        c.store.save_report(factories.report(id=f"r{i:03d}"), SLOT)
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    (summary,) = [a for a in c.store.list_alerts(limit=1000) if a.kind == "watchdog_summary"]
    assert len(summary.body.splitlines()) == 100 and "more)" not in summary.body


def test_a_cap_of_zero_still_posts_one_alert_and_the_summary(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT), watchdog_max_alerts=0)
    for report_id in ("a", "b", "c"):
        c.store.save_report(factories.report(id=report_id), SLOT)
    result = wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    assert result.posted == 2
    (summary,) = [a for a in c.store.list_alerts(limit=100) if a.kind == "watchdog_summary"]
    assert summary.subject == "…and 2 more watchdog alerts"


def test_different_sets_of_summarised_incidents_are_different_summaries(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT), watchdog_max_alerts=1)
    for report_id in ("a", "b", "c"):
        c.store.save_report(factories.report(id=report_id), SLOT)
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    for report_id in ("d", "e"):
        c.store.save_report(factories.report(id=report_id), SLOT + timedelta(days=1))
    for report_id in ("f", "g"):
        c.store.save_report(factories.report(id=report_id), SLOT + timedelta(days=1))
    wd.run_watchdog(c, SLOT + timedelta(days=1, minutes=21))
    summaries = [a for a in c.store.list_alerts(limit=100) if a.kind == "watchdog_summary"]
    assert sorted(a.subject for a in summaries) == ["…and 2 more watchdog alerts", "…and 3 more watchdog alerts"]


def test_a_pass_with_new_incidents_logs_how_many(c, caplog):
    make_run(c, "r1", RunStatus.PENDING)
    with caplog.at_level(logging.WARNING, logger="herald.services.watchdog"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    (line,) = [r for r in caplog.records if r.name == "herald.services.watchdog"]
    assert line.getMessage() == "watchdog found new incidents"
    assert (line.new, line.open) == (1, 1)  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="herald.services.watchdog"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        wd.run_watchdog(c, SLOT + timedelta(minutes=22))
    assert [r for r in caplog.records if r.name == "herald.services.watchdog"] == []


# The watchdog's own heartbeat ---------------------------------------------------------------
def test_a_failed_pass_pings_fail_and_raises(tmp_path, monkeypatch):
    c = factories.container(tmp_path, FakeClock(SLOT), watchdog_heartbeat_url="https://hc.example/ping/wd")

    def broken(*args, **kwargs):
        raise RuntimeError("store down")

    monkeypatch.setattr(c.store, "list_runs", broken)
    with pytest.raises(RuntimeError, match="store down"):
        wd.run_watchdog(c, SLOT)
    monkeypatch.undo()
    drain(c, path=SEND_NOTIFICATION)
    assert c.heartbeat.pings == [("https://hc.example/ping/wd", "fail", "watchdog-20261102T070000.000000")]


def test_a_pass_pings_success_once_per_pass(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT), watchdog_heartbeat_url="https://hc.example/ping/wd")
    wd.run_watchdog(c, SLOT)
    wd.run_watchdog(c, SLOT)  # the same pass redelivered: one ping
    wd.run_watchdog(c, SLOT + timedelta(minutes=5))
    drain(c, path=SEND_NOTIFICATION)
    assert c.heartbeat.pings == [
        ("https://hc.example/ping/wd", "success", "watchdog-20261102T070000.000000"),
        ("https://hc.example/ping/wd", "success", "watchdog-20261102T070500.000000"),
    ]


def test_without_a_heartbeat_url_nothing_is_pinged(c):
    wd.run_watchdog(c, SLOT)
    drain(c, path=SEND_NOTIFICATION)
    assert c.heartbeat.pings == []
