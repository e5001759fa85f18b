"""The watchdog on a moved clock: grace ± ε, one alert per slot across passes, recovery
notes, a dead tick, DST days, stuck runs, no flood, and its own heartbeat."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from herald.adapters.gcp.scheduler_health import TickHealth
from herald.domain import ids
from herald.domain.errors import DeliveryError
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import runs
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import SEND_NOTIFICATION
from herald.services.watchdog import record_tick, run_watchdog
from herald.web.app import create_app
from herald.web.auth import INTERNAL_HEADER, internal_token
from tests import factories
from tests.drive import drain

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # 07:00 London
GRACE = timedelta(minutes=20)
EPS = timedelta(seconds=1)
OPS = "#reporting-ops"


@pytest.fixture
def clock():
    return FakeClock(SLOT - timedelta(minutes=1))


@pytest.fixture
def c(tmp_path, clock):
    container = factories.container(tmp_path, clock)
    apply_definitions(container, [factories.report()])
    return container


def posts(c):
    return c.chat.posted.get(OPS, [])


def watch(c, **kwargs):
    """One watchdog pass, then its notifications' tasks (what the queue would do now)."""
    result = run_watchdog(c, **kwargs)
    drain(c, path=SEND_NOTIFICATION)
    return result


def at(c, clock, instant):
    clock.set(instant)
    return watch(c)


def test_a_slot_with_no_run_alerts_at_grace_plus_epsilon_and_not_before(c, clock):
    assert at(c, clock, SLOT + GRACE - EPS).found == []
    assert posts(c) == []
    result = at(c, clock, SLOT + GRACE + EPS)
    assert len(result.new) == 1 and result.posted == 1
    (message,) = posts(c)
    assert "Board pack" in message.text and "not started" in message.text
    assert "2026-11-02 07:00 GMT (Europe/London)" in message.text and "tick" in message.text
    (alert,) = c.store.list_alerts()
    assert alert.kind == "incident_late" and alert.target == OPS and alert.sent


def test_an_outage_of_any_length_is_one_incident_message_and_one_all_clear(c, clock):
    clock.set(SLOT + timedelta(days=2, minutes=30))  # the tick has been dead for two days
    assert len(watch(c).new) == 1  # 2, 3 and 4 November: one incident, not three messages
    for _ in range(12):
        clock.advance(minutes=5)
        assert watch(c).new == []
    assert len(posts(c)) == 1
    # The tick comes back: the three slots are recorded missed; the incident learns it, quietly.
    assert len(tick(c).missed) == 3
    assert watch(c).new == [] and len(posts(c)) == 1
    (incident,) = [a for a in c.store.list_alerts() if a.kind == "incident_late"]
    assert sorted(incident.params.values()) == ["missed"] * 3
    # The next slot runs and succeeds: one all-clear that names what happened.
    clock.set(SLOT + timedelta(days=3))
    tick(c)
    drain(c)
    assert len(posts(c)) == 2
    clear = posts(c)[1].text
    assert clear.startswith("*Resolved: Board pack: 3 slots missed, 2026-11-02 07:00-2026-11-04 07:00 GMT")
    assert "2026-11-05 07:00 GMT succeeded" in clear


def test_a_late_run_alerts_with_its_state_then_a_recovery_note_when_it_completes(c, clock):
    clock.set(SLOT)
    run_id = tick(c).started[0]  # created, but no worker picks it up
    assert at(c, clock, SLOT + GRACE - EPS).found == []
    at(c, clock, SLOT + GRACE + EPS)
    (late,) = posts(c)
    assert "is pending" in late.text and run_id in late.text
    clock.advance(minutes=3)
    drain(c)
    assert c.store.get_run(run_id).status == RunStatus.SUCCEEDED
    assert len(posts(c)) == 2
    recovery = posts(c)[1]
    assert recovery.text.startswith("*Resolved: Board pack: 1 slot late (pending), 2026-11-02 07:00 GMT")
    assert "2026-11-02 07:00 GMT succeeded" in recovery.text
    runs.finish_run(c, run_id)  # a redelivered finish task: no second note
    for _ in range(3):
        clock.advance(minutes=5)
        watch(c)
    assert len(posts(c)) == 2


def test_a_run_that_completed_on_time_is_never_alerted(c, clock):
    clock.set(SLOT)
    tick(c)
    drain(c)
    for minutes in (21, 40, 120):
        assert at(c, clock, SLOT + timedelta(minutes=minutes)).found == []
    assert posts(c) == []


def test_a_waiting_run_says_what_it_waits_for(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [factories.report(depends_on=[{"job": "warehouse-etl", "wait_up_to": "3h"}])])
    clock.set(SLOT)
    tick(c)
    drain(c)
    at(c, clock, SLOT + GRACE + EPS)
    (message,) = posts(c)
    assert "is waiting" in message.text and "waiting for warehouse-etl 2026-11-02 until" in message.text


def test_a_per_report_grace_overrides_the_setting(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [factories.report(watchdog_grace="45m")])
    assert at(c, clock, SLOT + timedelta(minutes=45) - EPS).found == []
    assert len(at(c, clock, SLOT + timedelta(minutes=45) + EPS).new) == 1


def test_a_dead_cloud_scheduler_tick_is_one_incident_with_one_all_clear(c, clock):
    clock.set(SLOT - timedelta(hours=3))  # nothing due: only the tick's own health speaks
    silent = TickHealth(last_attempt_at=clock.now() - timedelta(minutes=10), last_status_ok=True, state="ENABLED")
    for _ in range(5):
        watch(c, tick_health=lambda: silent)
        clock.advance(minutes=5)
    (message,) = posts(c)
    assert "has not run since" in message.text
    failing = []
    for _ in range(5):  # attempts continue and fail: the last attempt moves, the incident does not
        failing.append(TickHealth(clock.now() - timedelta(seconds=30), False, "ENABLED", last_status_message="503"))
        watch(c, tick_health=lambda: failing[-1])
        clock.advance(minutes=5)
    assert len(posts(c)) == 1  # still the same incident: its record learns "failing", nothing is re-posted
    (incident,) = [a for a in c.store.list_alerts() if a.kind == "incident_tick"]
    assert "failing (503)" in incident.body
    healthy = TickHealth(clock.now() - timedelta(seconds=30), True, "ENABLED")
    assert watch(c, tick_health=lambda: healthy).found == []
    assert len(posts(c)) == 2 and posts(c)[1].text.startswith("*Resolved: the scheduler tick")
    assert watch(c, tick_health=lambda: healthy).found == [] and len(posts(c)) == 2  # one all-clear


def test_the_container_tick_health_is_used_and_an_unreadable_one_is_not_an_alarm(c, clock):
    clock.set(SLOT - timedelta(hours=3))
    c.tick_health = lambda: TickHealth(None, None, "PAUSED")
    assert len(watch(c).new) == 1

    def broken():
        raise RuntimeError("Scheduler API unavailable")

    c.tick_health = broken
    assert watch(c).found == []


def test_the_embedded_tickers_last_tick_file(c, clock):
    clock.set(SLOT - timedelta(hours=3))
    record_tick(c.settings, clock.now())
    clock.advance(minutes=2)
    assert watch(c).found == []
    clock.advance(minutes=2)  # 4 minutes of silence > 3 ticks
    assert len(watch(c).new) == 1
    (message,) = posts(c)
    assert "has not run since" in message.text


def test_a_run_stuck_in_one_state_is_alerted_once(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [factories.report(schedule=None)])  # manual runs only: no slot to be late for
    run, _ = runs.start_manual_run(c, "board-pack", request_id="m1")
    c.store.transition_run(run.id, [RunStatus.PENDING], RunStatus.RENDERING, updated_at=clock.now())
    assert at(c, clock, clock.now() + timedelta(hours=2) - EPS).found == []
    at(c, clock, clock.now() + 2 * EPS)
    at(c, clock, clock.now() + timedelta(minutes=5))
    stuck = [m for m in posts(c) if m.text.startswith("*Stuck")]
    assert len(stuck) == 1 and run.id in stuck[0].text and "rendering" in stuck[0].text


def test_many_late_slots_post_as_one_summary_not_a_flood(tmp_path, clock):
    c = factories.container(tmp_path, clock, watchdog_max_alerts=10)
    apply_definitions(c, [factories.report(id=f"client-{i:02d}") for i in range(15)])
    result = at(c, clock, SLOT + GRACE + EPS)
    assert len(result.new) == 15 and result.posted == 11
    assert posts(c)[-1].text.startswith("*…and 5 more watchdog alerts")
    recorded = c.store.list_alerts(limit=100)
    assert len(recorded) == 16 and sum(a.sent for a in recorded) == 11  # the 5 others are told in the summary
    clock.advance(minutes=5)
    assert watch(c).posted == 0 and len(posts(c)) == 11


def test_an_alert_that_could_not_be_posted_is_retried_on_its_own_schedule(c, clock):
    c.chat.script[OPS] = [DeliveryError("rate limited", permanent=False)]
    assert at(c, clock, SLOT + GRACE + EPS).posted == 1  # queued as a notification
    assert posts(c) == [] and not c.store.list_alerts()[0].sent
    first_retry = timedelta(seconds=c.settings.alert_retry_delays[0])
    clock.set(clock.now() + first_retry - EPS)
    drain(c, path=SEND_NOTIFICATION)
    assert posts(c) == []  # not before its retry is due
    clock.set(clock.now() + 2 * EPS)
    drain(c, path=SEND_NOTIFICATION)
    assert len(posts(c)) == 1 and c.store.list_alerts()[0].sent
    assert at(c, clock, SLOT + GRACE + timedelta(minutes=5)).posted == 0 and len(posts(c)) == 1


def test_the_watchdog_pings_its_own_heartbeat_every_pass(tmp_path, clock):
    c = factories.container(tmp_path, clock, watchdog_heartbeat_url="https://hc.example/ping/watchdog")
    for _ in range(3):
        watch(c)
        clock.advance(minutes=5)
    pings = [(url, state) for url, state, _ in c.heartbeat.pings]
    assert pings == [("https://hc.example/ping/watchdog", "success")] * 3


def test_a_pass_never_scans_every_schedule(c, clock):
    def everything():
        raise AssertionError("list_reports: O(all schedules)")

    c.store.list_reports = everything
    clock.set(SLOT + GRACE + EPS)
    assert len(watch(c).new) == 1


# DST days --------------------------------------------------------------------------------------
def _dst_container(tmp_path, clock, zone):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [factories.report(schedule={"cron": "30 1 * * *", "timezone": zone})])
    return c


def test_london_spring_forward_slot_is_watched_at_its_shifted_instant(tmp_path):
    clock = FakeClock(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    c = _dst_container(tmp_path, clock, "Europe/London")
    slot = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 01:30 GMT does not exist: 02:30 BST
    assert c.store.get_report("board-pack").next_fire_at == slot
    assert at(c, clock, slot + GRACE - EPS).found == []
    at(c, clock, slot + GRACE + EPS)
    (message,) = posts(c)
    assert "2026-03-29 02:30 BST (Europe/London)" in message.text


def test_new_york_fall_back_day_has_one_slot_and_one_alert(tmp_path):
    clock = FakeClock(datetime(2026, 10, 31, 12, 0, tzinfo=UTC))
    c = _dst_container(tmp_path, clock, "America/New_York")
    slot = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # the first 01:30 (EDT); 01:30 EST does not fire
    assert c.store.get_report("board-pack").next_fire_at == slot
    assert at(c, clock, slot + GRACE - EPS).found == []
    at(c, clock, slot + GRACE + EPS)
    while clock.now() < slot + timedelta(hours=3):  # past the second 01:30 (06:30 UTC) + grace
        clock.advance(minutes=5)
        watch(c)
    (message,) = posts(c)
    assert "2026-11-01 01:30 EDT (America/New_York)" in message.text


# Entry points ----------------------------------------------------------------------------------
def test_the_internal_route_runs_a_pass(c, clock):
    client = create_app(c).test_client()
    assert client.post("/scheduler/watchdog").status_code == 401
    clock.set(SLOT + GRACE + EPS)
    response = client.post("/scheduler/watchdog", headers={INTERNAL_HEADER: internal_token(c.secret)})
    assert response.status_code == 200 and response.get_json() == {"open": 1, "new": 1, "posted": 1}


def test_herald_watchdog_and_the_job_entrypoint_run_one_pass(tmp_path, monkeypatch):
    from herald.cli import main
    from jobs import watchdog as job

    runner = CliRunner()
    result = runner.invoke(main, ["--data-dir", str(tmp_path), "watchdog"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {"open": 0, "new": 0, "posted": 0}
    monkeypatch.setenv("HERALD_DATA_DIR", str(tmp_path))
    assert job.main() == 0


def test_ids_are_stable_for_a_slot():
    from herald.services.watchdog import late_alert_id

    assert late_alert_id("r", SLOT) == late_alert_id("r", SLOT.astimezone()) != late_alert_id("r", SLOT + EPS)
    assert ids.alert_id("watchdog", "late", "r", SLOT.isoformat()) == late_alert_id("r", SLOT)
