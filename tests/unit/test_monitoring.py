"""Monitoring people can trust, on a moved clock: incidents instead of floods, no
"recovered" for a failed run, catch-up runs the latest slot once, one render per report,
deliberate skips said to the monitor, pings that never hold up a run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from herald.adapters.gcp.scheduler_health import TickHealth
from herald.domain.errors import DeliveryError
from herald.domain.ids import heartbeat_id
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import runs
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import SEND_NOTIFICATION
from herald.services.watchdog import run_watchdog
from tests import factories
from tests.drive import drain
from tests.fakes import StaticSource
from tests.web.serving import served_on_loopback

OPS = "#reporting-ops"
START = datetime(2026, 11, 2, 18, 40, tzinfo=UTC)
HC = "https://hc-ping.com/0f3e"


def minutely(**extra):
    return factories.report(
        id="ticker",
        name="Minutely KPIs",
        schedule={"cron": "* * * * *", "timezone": "UTC"},
        watchdog_grace="1m",
        **extra,
    )


def posts(c):
    return [m.text for m in c.chat.posted.get(OPS, [])]


def test_a_12_slot_outage_is_one_incident_and_one_all_clear_and_catch_up_runs_once(tmp_path):
    clock = FakeClock(START)
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [minutely()])
    for _ in range(3):  # healthy: a run a minute, nothing said
        clock.advance(minutes=1)
        tick(c)
        drain(c)
    assert posts(c) == []
    last_tick = clock.now()
    for _ in range(12):  # the scheduler dies for 12 slots; the watchdog keeps watching every minute
        clock.advance(minutes=1)
        dead = TickHealth(last_attempt_at=last_tick, last_status_ok=True, state="ENABLED")
        run_watchdog(c, tick_health=lambda h=dead: h)
        drain(c, path=SEND_NOTIFICATION)
    during = posts(c)
    assert len(during) == 2, during  # the late slots (one incident) and the dead tick (one incident)
    clock.advance(minutes=1)
    result = tick(c)  # the tick is back: catch-up runs only the latest slot
    assert len(result.started) == 1 and len(result.missed) >= 12
    drain(c)
    healthy = TickHealth(last_attempt_at=clock.now(), last_status_ok=True, state="ENABLED")
    run_watchdog(c, tick_health=lambda: healthy)
    drain(c)
    messages = posts(c)
    resolved = [m for m in messages if m.startswith("*Resolved")]
    assert len(messages) == 4 and len(resolved) == 2, messages  # open x 2, all-clear x 2
    late_clear = next(m for m in resolved if "Minutely KPIs" in m)
    assert "missed" in late_clear and "succeeded" in late_clear
    assert sum(len(v) for v in c.mailer.sent.values()) == 2 * 4  # 3 healthy runs + 1 catch-up run, 2 recipients


def test_a_late_run_that_fails_is_said_as_failed_never_recovered(tmp_path):
    slot = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    clock = FakeClock(slot - timedelta(minutes=1))
    c = factories.container(tmp_path, clock)
    c.source = StaticSource(fail="reporting API down")
    apply_definitions(c, [factories.report()])
    clock.set(slot)
    run_id = tick(c).started[0]  # created; no worker picks it up yet
    clock.set(slot + timedelta(minutes=21))
    run_watchdog(c)
    drain(c, path=SEND_NOTIFICATION)
    assert len(posts(c)) == 1 and posts(c)[0].startswith("*Late")
    drain(c)  # now it runs, and fails
    assert c.store.get_run(run_id).status == RunStatus.FAILED
    assert not any("Resolved" in m or "Recovered" in m for m in posts(c))
    assert posts(c)[-1].startswith("*Failed: Board pack") and "(it was late)" in posts(c)[-1]


def test_failed_run_notices_are_opt_in(tmp_path):
    for opted, expected in ((False, 0), (True, 1)):
        c = factories.container(tmp_path / str(opted), watchdog_notify_failed_runs=opted)
        c.source = StaticSource(fail="reporting API down")
        apply_definitions(c, [factories.report(schedule=None)])
        runs.start_manual_run(c, "board-pack", request_id="r")
        drain(c)
        assert len([m for m in posts(c) if m.startswith("*Failed")]) == expected


def test_catch_up_all_runs_every_slot_in_the_window(tmp_path):
    clock = FakeClock(START)
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [minutely(catchup="all")])
    clock.advance(minutes=5)
    result = tick(c)
    assert len(result.started) == 5 and result.missed == []


class GatedSource(StaticSource):
    def __init__(self) -> None:
        super().__init__()
        self.hold = True

    def render(self, request):
        if self.hold:  # a render still going on, seen from the next run: the slot stays claimed
            raise AssertionError("the test releases renders explicitly")
        return super().render(request)


def test_one_render_per_report_the_next_run_queues_or_skips(tmp_path):
    for overlap in ("queue", "skip"):
        clock = FakeClock(START)
        c = factories.container(tmp_path / overlap, clock)
        apply_definitions(c, [factories.report(schedule=None, overlap=overlap, heartbeat_url=HC)])
        first, _ = runs.start_manual_run(c, "board-pack", request_id="one")
        second, _ = runs.start_manual_run(c, "board-pack", request_id="two")
        # The first run holds the report's render slot (as if its source were still answering).
        assert runs._render_slot(c, factories.report(), first) is None
        c.store.transition_run(first.id, [RunStatus.PENDING], RunStatus.RENDERING)
        outcome = runs.execute_run(c, second.id)
        if overlap == "queue":
            assert outcome.run.status == RunStatus.PENDING and c.source.renders == []
            c.store.transition_run(first.id, [RunStatus.RENDERING], RunStatus.FAILED)  # it ends
            clock.advance(seconds=runs.OVERLAP_RECHECK_SECONDS)
            drain(c, path="/tasks/runs/execute")
            assert c.store.get_run(second.id).status == RunStatus.DELIVERING
        else:
            assert outcome.run.status == RunStatus.SKIPPED and "still rendering" in outcome.run.note
            drain(c)
            assert any(m.startswith("*Skipped: Board pack") for m in posts(c))
            assert (HC, "success", second.id) in c.heartbeat.pings  # a deliberate skip is said, as success
            skip_ping = c.heartbeat.messages[c.heartbeat.pings.index((HC, "success", second.id))]
            assert skip_ping.startswith("skipped: ")


def test_a_monitor_that_fails_never_holds_up_the_run(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(schedule=None, heartbeat_url=HC)])
    c.heartbeat.script = [DeliveryError("monitor did not answer within 5 s", permanent=False)] * 10
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED  # the run did not wait for its pings
    assert sorted(c.mailer.sent) == ["a@example.com", "b@example.com"]
    assert c.store.get_alert(heartbeat_id("success", run.id)).channels["heartbeat"].status == "pending"  # retrying


def test_the_on_time_record_counts_slots_completed_within_their_grace(tmp_path):
    from herald.services.on_time import on_time

    clock = FakeClock(datetime(2026, 11, 1, 6, 0, tzinfo=UTC))
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [factories.report()])  # 07:00 London daily, 20 minutes' grace
    for day in range(10):  # 10 daily slots: 7 on time, 1 late (30 min), 1 failed, 1 never run
        clock.set(datetime(2026, 11, 1 + day, 7, 0, tzinfo=UTC))
        if day == 9:
            c.store.advance_schedule("board-pack", clock.now(), clock.now() + timedelta(days=1))
            continue
        started = tick(c).started
        c.source = StaticSource(fail="upstream down") if day == 8 else StaticSource()
        if day == 7:
            clock.advance(minutes=30)
        drain(c)
        assert len(started) == 1
    clock.set(datetime(2026, 11, 11, 7, 0, tzinfo=UTC))
    week, month = on_time(c, factories.report())
    assert (month.slots, month.on_time, month.share) == (10, 7, 0.7)
    assert (week.days, week.slots, week.on_time) == (7, 7, 4)  # 4 to 10 November: days 3-9
    response = served_on_loopback(c).test_client().get("/api/reports/board-pack")
    assert response.get_json()["on_time"]["30d"] == {"days": 30, "slots": 10, "on_time": 7, "share": 0.7}


def test_the_on_time_metric_counts_the_line_herald_logs():
    from pathlib import Path

    from herald.services.on_time import LOG_LINE

    terraform = (Path(__file__).resolve().parents[2] / "terraform/modules/herald/monitoring.tf").read_text()
    assert f'jsonPayload.message = \\"{LOG_LINE}\\"' in terraform and "herald/runs_on_time" in terraform


def test_a_real_monitor_answering_503_then_200_loses_no_ping(tmp_path):
    from herald.adapters.heartbeat import HttpHeartbeat
    from tests.adapters.local_http import Reply, local_server

    answers = iter([503, 503])

    def ping(seen):
        return Reply(next(answers, 200), b"OK")

    with local_server({"/ping/check": ping, "/ping/check/start": lambda seen: Reply(200, b"OK")}) as monitor:
        c = factories.container(tmp_path)
        c.heartbeat = HttpHeartbeat(timeout_seconds=2, allow_private=True)
        apply_definitions(c, [factories.report(schedule=None, heartbeat_url=f"{monitor.url}/ping/check")])
        run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
        drain(c)
        assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED and not c.store.get_run(run.id).heartbeat_sent
        for delay in c.settings.heartbeat_retry_delays[:2]:
            c.clock.advance(seconds=delay)
            drain(c)
    finals = [seen for seen in monitor.seen if seen.path == "/ping/check"]
    assert [seen.method for seen in finals] == ["POST"] * 3 and b"succeeded" in finals[-1].body
    assert c.store.get_run(run.id).heartbeat_sent  # the third try was acknowledged


def test_a_run_queued_behind_a_long_render_is_not_given_up_by_the_reconciler(tmp_path):
    from herald.services.reconcile import reconcile

    clock = FakeClock(START)
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [factories.report(schedule=None)])
    first, _ = runs.start_manual_run(c, "board-pack", request_id="one")
    second, _ = runs.start_manual_run(c, "board-pack", request_id="two")
    assert runs._render_slot(c, factories.report(), first) is None  # the first renders for a long time
    lease = clock.now() + timedelta(seconds=c.settings.render_lease_seconds)
    c.store.transition_run(first.id, [RunStatus.PENDING], RunStatus.RENDERING, lease_until=lease)
    c.queue.pending = [t for t in c.queue.pending if t.payload.get("run_id") != first.id]  # it is rendering now
    for _ in range(14):  # 14 minutes of a render still within its claim; the second waits its turn
        clock.advance(minutes=1)
        drain(c, path="/tasks/runs/execute")
        reconcile(c)
    waiting = c.store.get_run(second.id)
    assert waiting.status == RunStatus.PENDING and waiting.recoveries == 0  # waiting is progress, not a stall


def test_a_render_slot_claimed_by_a_run_about_to_render_is_not_taken_over(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(schedule=None)])
    first, _ = runs.start_manual_run(c, "board-pack", request_id="one")
    second, _ = runs.start_manual_run(c, "board-pack", request_id="two")
    assert runs._render_slot(c, factories.report(), first) is None  # claimed; still pending for a moment
    assert runs._render_slot(c, factories.report(), second) is not None  # the second waits its turn
    c.store.transition_run(first.id, [RunStatus.PENDING], RunStatus.RENDERING)
    c.store.transition_run(first.id, [RunStatus.RENDERING], RunStatus.DELIVERING)  # rendered, then crashed
    assert runs._render_slot(c, factories.report(), second) is None  # a holder past rendering is taken over
