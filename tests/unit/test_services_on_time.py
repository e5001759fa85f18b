"""services/on_time.py: of a report's scheduled slots in the last 7 / 30 days, the share
whose run succeeded within its watchdog grace; slots without a run count against it,
slots inside their grace and slots before the report's first scheduled run do not
(the module's docstring). Runs are written straight into the store, so each case is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.ids import scheduled_run_id
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import on_time as ot
from herald.services.runs import new_run
from tests import factories

REPORT = factories.report()  # 07:00 London daily, 20 minutes' grace by default
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def c(tmp_path):
    return factories.container(tmp_path, FakeClock(NOW))


def slot(day):
    return datetime(2026, 11, day, 7, 0, tzinfo=UTC)


def add(c, day, status=RunStatus.SUCCEEDED, finished_after=timedelta(minutes=5), trigger="schedule", report=REPORT):
    s = slot(day)
    run_id = scheduled_run_id(report.id, s) if trigger == "schedule" else f"manual-{day}"
    run = new_run(report, run_id, trigger, s, slot=s if trigger == "schedule" else None, status=status)
    finished = s + finished_after if finished_after is not None else None
    assert c.store.create_run(run.model_copy(update={"finished_at": finished}))


def records(c, report=REPORT, now=NOW):
    return [(r.days, r.slots, r.on_time) for r in ot.on_time(c, report, now)]


def test_no_schedule_means_no_record(c):
    assert ot.on_time(c, factories.report(schedule=None)) == []


def test_no_scheduled_run_yet_is_an_empty_record_per_window(c):
    assert [r.to_doc() for r in ot.on_time(c, REPORT)] == [
        {"days": 7, "slots": 0, "on_time": 0, "share": None},
        {"days": 30, "slots": 0, "on_time": 0, "share": None},
    ]
    add(c, 3, trigger="manual")  # manual runs say nothing about the schedule
    assert records(c) == [(7, 0, 0), (30, 0, 0)]


def test_slots_are_counted_from_the_first_scheduled_run(c):
    add(c, 20)
    add(c, 25)
    # 20..30 November: 11 slots, 2 on time; the 7-day window holds 24..30 (7 slots), 1 on time.
    assert records(c) == [(7, 7, 1), (30, 11, 2)]
    assert ot.on_time(c, REPORT)[1].share == round(2 / 11, 4)


def test_a_run_finishing_exactly_at_the_end_of_its_grace_is_on_time(c):
    add(c, 28, finished_after=timedelta(minutes=20))
    add(c, 29, finished_after=timedelta(minutes=20, seconds=1))
    add(c, 30, status=RunStatus.FAILED)
    assert records(c) == [(7, 3, 1), (30, 3, 1)]


def test_unfinished_failed_or_missed_runs_count_against_it(c):
    add(c, 26, status=RunStatus.PARTIAL)
    add(c, 27, status=RunStatus.MISSED, finished_after=None)
    add(c, 28, status=RunStatus.SUCCEEDED, finished_after=None)  # odd, but never "on time"
    add(c, 29)
    assert records(c) == [(7, 5, 1), (30, 5, 1)]


def test_a_slot_still_inside_its_grace_is_not_counted_yet(c):
    add(c, 29)
    now = slot(30) + timedelta(minutes=19)
    assert records(c, now=now) == [(7, 1, 1), (30, 1, 1)]
    assert records(c, now=slot(30) + timedelta(minutes=20)) == [(7, 2, 1), (30, 2, 1)]


def test_only_this_reports_runs_count(c):
    other = factories.report(id="other")
    add(c, 25, report=other)
    add(c, 29)
    assert records(c) == [(7, 2, 1), (30, 2, 1)]


def test_runs_past_the_first_page_are_read(c, monkeypatch):
    monkeypatch.setattr(ot, "PAGE", 2)
    for day in range(20, 31):
        add(c, day)
    assert records(c) == [(7, 7, 7), (30, 11, 11)]


def test_runs_created_before_the_oldest_slot_counted_stop_the_scan(c):
    add(c, 1)  # 29 days ago: inside 30 days
    assert records(c) == [(7, 7, 0), (30, 30, 1)]


def test_the_outcome_of_each_scheduled_run_is_one_log_line(c, caplog):
    import logging

    on = new_run(REPORT, "r1", "schedule", slot(30), slot=slot(30), status=RunStatus.SUCCEEDED)
    on = on.model_copy(update={"finished_at": slot(30) + timedelta(minutes=3)})
    with caplog.at_level(logging.INFO, logger="herald.services.on_time"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        ot.record_outcome(c, REPORT, on)
        ot.record_outcome(c, REPORT, on.model_copy(update={"status": RunStatus.FAILED}))
        ot.record_outcome(c, REPORT, on.model_copy(update={"trigger": "manual"}))
        ot.record_outcome(c, REPORT, on.model_copy(update={"slot": None}))
    lines = [r for r in caplog.records if r.name == "herald.services.on_time"]
    assert [r.getMessage() for r in lines] == [ot.LOG_LINE, ot.LOG_LINE]
    assert [(r.report_id, r.run_id, r.on_time, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("board-pack", "r1", True, "succeeded"),
        ("board-pack", "r1", False, "failed"),
    ]
