"""services/scheduling.py: the tick (ARCHITECTURE.md decision 1): one run per due slot,
slots past HERALD_MISFIRE_SECONDS recorded missed with the reason, catch-up ``latest``
running only the most recent slot, a failing report not stopping the others, and the
reconciler's pass every HERALD_RECONCILE_AFTER_SECONDS."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import scheduling as s
from tests import factories

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # 07:00 London
MINUTELY = {"cron": "* * * * *", "timezone": "UTC"}


@pytest.fixture
def clock():
    return FakeClock(SLOT - timedelta(minutes=1))


@pytest.fixture
def c(tmp_path, clock):
    container = factories.container(tmp_path, clock)
    s.apply_definitions(container, [factories.report()])
    return container


def notes(c, run_ids):
    return [c.store.get_run(r).note for r in run_ids]


def test_a_slot_exactly_at_the_misfire_limit_still_runs(c, clock):
    result = s.tick(c, SLOT + timedelta(seconds=600))
    assert len(result.started) == 1 and result.missed == [] and result.reports == 1


def test_a_slot_past_the_misfire_window_is_missed_with_its_reason(c, clock, caplog):
    with caplog.at_level(logging.ERROR, logger="herald.services.scheduling"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        result = s.tick(c, SLOT + timedelta(seconds=601))
    assert result.started == [] and len(result.missed) == 1
    run = c.store.get_run(result.missed[0])
    assert run.status == RunStatus.MISSED and run.note == "Not run: past the misfire window"
    (line,) = [r for r in caplog.records if r.name == "herald.services.scheduling"]
    assert line.getMessage() == "slot missed"
    assert (line.report_id, line.slot, line.late_seconds, line.reason) == (  # type: ignore[attr-defined]
        "board-pack",
        SLOT.isoformat(),
        601.0,
        "past the misfire window",
    )
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="herald.services.scheduling"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        c.store.save_report(factories.report(), SLOT)  # the same slot seen again: recorded once, said once
        assert s.tick(c, SLOT + timedelta(seconds=700)).missed == result.missed
    assert [r for r in caplog.records if r.name == "herald.services.scheduling"] == []


def test_catch_up_latest_runs_the_newest_slot_and_records_the_others(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    s.apply_definitions(c, [factories.report(schedule=MINUTELY, catchup="latest")])
    result = s.tick(c, SLOT + timedelta(minutes=3))  # 07:00 .. 07:03 are due, all inside the window
    assert len(result.started) == 1
    assert c.store.get_run(result.started[0]).slot == SLOT + timedelta(minutes=3)
    assert len(result.missed) == 3
    assert set(notes(c, result.missed)) == {"Not run: catch-up: only the latest slot runs"}


def test_catch_up_all_runs_every_slot_inside_the_window(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    s.apply_definitions(c, [factories.report(schedule=MINUTELY, catchup="all")])
    result = s.tick(c, SLOT + timedelta(minutes=3))
    assert len(result.started) == 4 and result.missed == []


def test_the_schedule_moves_to_the_next_slot_after_now(c, clock):
    s.tick(c, SLOT + timedelta(minutes=5))
    assert c.store.get_report("board-pack").next_fire_at == SLOT + timedelta(days=1)


def test_another_tick_that_advanced_first_is_only_logged(c, clock, monkeypatch, caplog):
    monkeypatch.setattr(c.store, "advance_schedule", lambda *a: False)
    with caplog.at_level(logging.INFO, logger="herald.services.scheduling"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        result = s.tick(c, SLOT)
    assert len(result.started) == 1
    said = [
        (r.getMessage(), getattr(r, "report_id", None))
        for r in caplog.records
        if r.name == "herald.services.scheduling"
    ]
    assert ("schedule advanced by another tick", "board-pack") in said


def test_a_report_that_cannot_start_does_not_stop_the_others(tmp_path, clock, monkeypatch, caplog):
    c = factories.container(tmp_path, clock)
    s.apply_definitions(c, [factories.report(id="a"), factories.report(id="b")])
    real = c.store.create_run

    def create_run(run):
        if run.report_id == "a":
            raise RuntimeError("store full")
        return real(run)

    monkeypatch.setattr(c.store, "create_run", create_run)
    with caplog.at_level(logging.ERROR, logger="herald.services.scheduling"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        result = s.tick(c, SLOT)
    assert result.failed == ["a"] and result.reports == 2 and len(result.started) == 1
    assert c.store.get_report("a").next_fire_at == SLOT  # its schedule stays: the next tick tries again
    (line,) = [r for r in caplog.records if r.name == "herald.services.scheduling"]
    assert line.getMessage() == "tick could not start a report's runs" and line.report_id == "a"  # type: ignore[attr-defined]
    assert line.exc_info is not None


def test_reports_without_a_schedule_or_fire_time_are_not_counted(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    s.apply_definitions(c, [factories.report(id="manual", schedule=None), factories.report(id="sched")])
    c.store.save_report(factories.report(id="manual", schedule=None), SLOT)  # odd, but stored so
    result = s.tick(c, SLOT)
    assert result.reports == 1 and len(result.started) == 1


def test_the_tick_logs_what_it_did_when_something_was_due(c, clock, caplog):
    with caplog.at_level(logging.INFO, logger="herald.services.scheduling"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        s.tick(c, SLOT - timedelta(seconds=30))  # nothing due: nothing said
        s.tick(c, SLOT)
    lines = [r for r in caplog.records if r.name == "herald.services.scheduling" and r.getMessage() == "tick"]
    assert len(lines) == 1
    assert (lines[0].due_reports, lines[0].runs, lines[0].missed) == (1, 1, 0)  # type: ignore[attr-defined]


def test_the_tick_uses_the_clock_by_default(c, clock):
    clock.set(SLOT)
    assert len(s.tick(c).started) == 1


@pytest.mark.parametrize(
    ("after", "minute", "due"),
    [
        (300.0, 0, True),
        (300.0, 5, True),
        (300.0, 3, False),
        (60.0, 7, True),
        (90.0, 7, True),
        (30.0, 7, True),
        (180.0, 4, False),
        (180.0, 6, True),
    ],
)
def test_the_reconciler_runs_on_ticks_whose_minute_is_a_multiple_of_its_period(tmp_path, after, minute, due):
    c = factories.container(tmp_path, reconcile_after_seconds=after)
    now = datetime(2026, 11, 2, 7, minute, 30, tzinfo=UTC)
    assert s._reconcile_due(c, now) is due


def test_a_tick_on_a_reconcile_minute_counts_what_was_queued_again(c, clock):
    from herald.services.runs import new_run

    stalled = new_run(factories.report(), "stalled", "manual", SLOT - timedelta(hours=1))
    c.store.create_run(stalled)
    assert s.tick(c, SLOT + timedelta(minutes=1)).reconciled == 0  # 07:01: not a multiple of 5 minutes
    assert s.tick(c, SLOT + timedelta(minutes=5)).reconciled == 1
