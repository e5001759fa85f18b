"""services/dependencies.py: the stored completion record (its documented shape:
``{"job", "period", "status": "succeeded", "completed_at"}``), which waiting runs a record
releases, the re-check and deadline tasks, and the words of each timeout policy (README
"Report definitions": fail alerts the owner, send_anyway adds a "Data as of …" note, skip)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import dependencies as deps
from herald.services.runs import new_run
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import EXECUTE_RUN, FINISH_RUN
from tests import factories
from tests.drive import drain

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
ETL = "warehouse-etl"


def board_pack(on_timeout="fail", period="same", wait="2h", **overrides):
    return factories.report(
        depends_on=[{"job": ETL, "period": period, "wait_up_to": wait, "on_timeout": on_timeout}], **overrides
    )


@pytest.fixture
def clock():
    return FakeClock(SLOT - timedelta(minutes=1))


def start(tmp_path, clock, definition, **settings):
    c = factories.container(tmp_path, clock, **settings)
    apply_definitions(c, [definition])
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    return c, run_id


def execute_tasks(c, run_id):
    """(eta, name) of the run's timed execute tasks: its re-checks and deadlines."""
    return sorted(
        (t.eta, t.name)
        for t in c.queue.tasks.values()
        if t.path == EXECUTE_RUN and t.payload["run_id"] == run_id and t.eta is not None
    )


def test_the_stored_record_is_the_documented_shape(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    clock.set(SLOT)
    record, created = deps.record_job_status(
        c,
        {"job": ETL, "period": "2026-11-02", "status": "succeeded", "completed_at": "2026-11-02T08:30:00+01:00"},
        via="pubsub",
    )
    assert created
    assert record == {
        "job": ETL,
        "period": "2026-11-02",
        "status": "succeeded",
        "completed_at": "2026-11-02T07:30:00+00:00",  # kept in UTC
        "recorded_at": SLOT.isoformat(),
        "details": {},
        "via": "pubsub",
    }
    assert c.store.get_job_status(ETL, "2026-11-02") == record
    clock.advance(minutes=5)
    again, created_again = deps.record_job_status(c, {"job": ETL, "period": "2026-11-02", "status": "succeeded"})
    assert not created_again and again == record  # the first record stays


def test_a_record_without_completion_time_completed_when_it_arrived(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    record, _ = deps.record_job_status(c, {"job": ETL, "period": "2026-W45", "status": "succeeded"})
    assert record["completed_at"] == record["recorded_at"] == clock.now().isoformat()
    assert record["via"] == "api"


def test_recording_is_logged_as_new_or_repeated(tmp_path, clock, caplog):
    c = factories.container(tmp_path, clock)
    with caplog.at_level(logging.INFO, logger="herald.services.dependencies"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        deps.record_job_status(c, {"job": ETL, "period": "2026-11", "status": "succeeded"})
        deps.record_job_status(c, {"job": ETL, "period": "2026-11", "status": "succeeded"}, via="pubsub")
    lines = [r for r in caplog.records if r.name == "herald.services.dependencies"]
    assert [r.getMessage() for r in lines] == ["job status recorded", "job status repeated"]
    assert [(r.job, r.period, r.released, r.via) for r in lines] == [  # type: ignore[attr-defined]
        (ETL, "2026-11", 0, "api"),
        (ETL, "2026-11", 0, "pubsub"),
    ]


def test_a_record_releases_exactly_the_waiting_runs_that_need_it(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    other = new_run(factories.report(id="plain"), "plain-run", "manual", SLOT, status=RunStatus.WAITING)
    c.store.create_run(other)  # waiting, but its report (unknown here) needs nothing of ours
    assert deps.release_waiting(c, ETL, "2026-11-01") == 0  # yesterday's record
    assert deps.release_waiting(c, "other-job", "2026-11-02") == 0
    assert deps.release_waiting(c, ETL, "2026-11-02") == 1
    assert deps.release_waiting(c, ETL, "2026-11-02") == 0  # the same release task, queued once
    drain(c)
    assert c.store.get_run(run_id).status == RunStatus.WAITING  # released, but the record is not there yet


@pytest.mark.timeout(30)  # a listing that never ends is a failure, not a hang
def test_release_counts_every_waiting_run_past_the_first_page(tmp_path, clock, monkeypatch):
    c, _ = start(tmp_path, clock, board_pack())
    monkeypatch.setattr(deps, "RELEASE_PAGE", 2)
    for i in range(4):
        run = new_run(board_pack(), f"manual-{i}", "manual", SLOT, status=RunStatus.WAITING)
        c.store.create_run(run)
    assert deps.release_waiting(c, ETL, "2026-11-02") == 5
    released = [t for t in c.queue.tasks.values() if t.name.startswith("release-")]
    assert sorted(t.payload["run_id"] for t in released)[:4] == [f"manual-{i}" for i in range(4)]


def test_release_tasks_differ_per_job_and_period(tmp_path, clock):
    definition = factories.report(
        depends_on=[
            {"job": ETL, "period": "same", "wait_up_to": "2h", "on_timeout": "fail"},
            {"job": "crm", "period": "same", "wait_up_to": "2h", "on_timeout": "fail"},
            {"job": ETL, "period": "previous_day", "wait_up_to": "2h", "on_timeout": "fail"},
        ]
    )
    c, _ = start(tmp_path, clock, definition)
    assert deps.release_waiting(c, ETL, "2026-11-02") == 1
    assert deps.release_waiting(c, "crm", "2026-11-02") == 1
    assert deps.release_waiting(c, ETL, "2026-11-01") == 1


def test_a_waiting_run_is_rechecked_on_a_grid_then_at_its_deadline(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack(wait="12m"), dependency_recheck_seconds=300)
    assert [eta for eta, _ in execute_tasks(c, run_id)] == [SLOT + timedelta(minutes=5)]
    clock.set(SLOT + timedelta(minutes=5))
    drain(c)
    clock.set(SLOT + timedelta(minutes=10))
    drain(c)
    etas = [eta for eta, _ in execute_tasks(c, run_id)]
    assert etas == [SLOT + timedelta(minutes=5), SLOT + timedelta(minutes=10), SLOT + timedelta(minutes=12)]


def test_a_deadline_exactly_on_the_grid_is_one_task(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack(wait="10m"), dependency_recheck_seconds=300)
    clock.set(SLOT + timedelta(minutes=5))
    drain(c)
    etas = [eta for eta, _ in execute_tasks(c, run_id)]
    assert etas == [SLOT + timedelta(minutes=5), SLOT + timedelta(minutes=10)]
    names = [n for _, n in execute_tasks(c, run_id)]
    assert len(set(names)) == len(names)


def test_rechecks_of_several_deadlines_have_their_own_names(tmp_path, clock):
    definition = factories.report(
        depends_on=[
            {"job": ETL, "period": "same", "wait_up_to": "3m", "on_timeout": "send_anyway"},
            {"job": "crm", "period": "same", "wait_up_to": "4m", "on_timeout": "fail"},
        ]
    )
    c, run_id = start(tmp_path, clock, definition, dependency_recheck_seconds=300)
    clock.set(SLOT + timedelta(minutes=3))
    drain(c)
    etas = [eta for eta, _ in execute_tasks(c, run_id)]
    assert etas == [SLOT + timedelta(minutes=3), SLOT + timedelta(minutes=4)]


def test_fail_says_what_was_late_and_the_owner_hears(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("fail"))
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.finished_at == SLOT + timedelta(hours=2)
    assert run.error == (
        "upstream data not complete in time: warehouse-etl 2026-11-02 (waited 2h, until 2026-11-02 09:00 UTC)"
    )
    assert any("upstream data not complete in time" in a.body for a in c.store.list_alerts())


def test_skip_is_recorded_with_its_note_and_time(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("skip"))
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SKIPPED and run.finished_at == SLOT + timedelta(hours=2)
    assert run.note == (
        "Skipped: upstream data not complete in time: warehouse-etl 2026-11-02 (waited 2h, until 2026-11-02 09:00 UTC)"
    )
    assert c.mailer.sent == {}


def test_fail_wins_over_skip_and_each_names_only_its_own(tmp_path, clock):
    definition = factories.report(
        depends_on=[
            {"job": ETL, "period": "same", "wait_up_to": "1h", "on_timeout": "skip"},
            {"job": "crm", "period": "same", "wait_up_to": "1h", "on_timeout": "send_anyway"},
            {"job": "hr", "period": "same", "wait_up_to": "1h", "on_timeout": "skip"},
        ]
    )
    c, run_id = start(tmp_path, clock, definition)
    clock.set(SLOT + timedelta(hours=1))
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SKIPPED
    assert run.note == (
        "Skipped: upstream data not complete in time: warehouse-etl 2026-11-02 (waited 1h, until 2026-11-02 08:00 UTC),"
        " hr 2026-11-02 (waited 1h, until 2026-11-02 08:00 UTC)"
    )


def test_a_gate_decision_on_a_run_already_moved_on_returns_the_stored_run(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("fail"))
    run = c.store.get_run(run_id)
    c.store.update_run(run_id, status=RunStatus.RENDERING)  # another worker got it
    (need,) = deps.needs(c, board_pack("fail"), run)
    assert deps._fail(c, run, [need], SLOT).status == RunStatus.RENDERING
    assert deps._skip(c, run, [need], SLOT).status == RunStatus.RENDERING
    assert not [t for t in c.queue.tasks.values() if t.path == FINISH_RUN]
    gone = run.model_copy(update={"id": "no-such-run"})
    assert deps._fail(c, gone, [need], SLOT) is gone


def test_send_anyway_notes_when_the_data_was_last_complete(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("send_anyway"))
    c.store.put_job_status(ETL, "2026-10-30", {"completed_at": "2026-10-30T06:15:00Z"})
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.note == (
        "Data as of 30 Oct 2026 06:15 UTC (warehouse-etl 2026-10-30): "
        "warehouse-etl 2026-11-02 had not completed by 02 Nov 2026 09:00 UTC."
    )
    assert run.updated_at >= SLOT + timedelta(hours=2)


def test_data_as_of_looks_back_six_earlier_periods_and_no_further(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("send_anyway"))
    c.store.put_job_status(ETL, "2026-10-26", {"completed_at": "2026-10-26T06:00:00+00:00"})  # 7 days back
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    assert c.store.get_run(run_id).note == (
        "Data may be incomplete: warehouse-etl 2026-11-02 had not completed by 02 Nov 2026 09:00 UTC."
    )


def test_data_as_of_finds_the_sixth_earlier_period(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("send_anyway"))
    c.store.put_job_status(ETL, "2026-10-27", {"recorded_at": "2026-10-27T05:00:00"})  # 6 days back, naive
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    assert c.store.get_run(run_id).note.startswith("Data as of 27 Oct 2026 05:00 UTC (warehouse-etl 2026-10-27): ")


def test_data_as_of_steps_by_the_dependency_period(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("send_anyway", period="month"))
    c.store.put_job_status(ETL, "2026-09", {"completed_at": "2026-10-01T02:00:00+02:00"})
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    assert c.store.get_run(run_id).note == (
        "Data as of 01 Oct 2026 00:00 UTC (warehouse-etl 2026-09): "
        "warehouse-etl 2026-11 had not completed by 02 Nov 2026 09:00 UTC."
    )


def test_a_manual_run_needs_the_period_of_when_it_was_created(tmp_path, clock):
    definition = board_pack("send_anyway", period="previous_day")
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [definition])
    run = new_run(definition, "m", "manual", SLOT + timedelta(days=3))
    (need,) = deps.needs(c, definition, run)
    assert need.label == "2026-11-04" and need.deadline == SLOT + timedelta(days=3, hours=2)


def test_a_report_without_a_schedule_labels_periods_in_utc(tmp_path, clock):
    definition = board_pack(period="day", schedule=None)
    run = new_run(definition, "m", "manual", datetime(2026, 11, 2, 23, 30, tzinfo=UTC))
    dependency = definition.depends_on[0]
    assert deps.required_label(dependency, definition, run) == "2026-11-02"
    zoned = board_pack(period="day", schedule={"cron": "0 7 * * *", "timezone": "Asia/Tokyo"})
    assert deps.required_label(dependency, zoned, run) == "2026-11-03"


@pytest.mark.parametrize(
    ("record", "said"),
    [
        ({"completed_at": "2026-10-30T06:15:00Z"}, "30 Oct 2026 06:15 UTC"),
        ({"completed_at": "2026-10-30T08:15:00+02:00"}, "30 Oct 2026 06:15 UTC"),
        ({"completed_at": "2026-10-30t06:15:00z"}, "30 Oct 2026 06:15 UTC"),
        ({"completed_at": "2026-10-30T06:15:00"}, "30 Oct 2026 06:15 UTC"),
        ({"recorded_at": "2026-10-30T06:15:00+00:00"}, "30 Oct 2026 06:15 UTC"),
        ({"completed_at": "", "recorded_at": "2026-10-30T06:15:00+00:00"}, "30 Oct 2026 06:15 UTC"),
        ({"completed_at": "last tuesday"}, "last tuesday"),
        ({}, "an unknown time"),
    ],
)
def test_completion_times_are_said_for_people(record, said):
    assert deps._completed(record) == said


def test_describe_says_what_a_waiting_run_waits_for(tmp_path, clock):
    definition = factories.report(
        depends_on=[
            {"job": ETL, "period": "same", "wait_up_to": "2h", "on_timeout": "fail"},
            {"job": "crm", "period": "same", "wait_up_to": "1h", "on_timeout": "skip"},
        ]
    )
    c, run_id = start(tmp_path, clock, definition)
    run = c.store.get_run(run_id)
    assert deps.describe(c, definition, run) == (
        "waiting for warehouse-etl 2026-11-02 until 2026-11-02 09:00 UTC (then fail); "
        "waiting for crm 2026-11-02 until 2026-11-02 08:00 UTC (then skip)"
    )


def test_the_gate_logs_what_it_decided(tmp_path, clock, caplog):
    with caplog.at_level(logging.INFO, logger="herald.services.dependencies"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        c, run_id = start(tmp_path, clock, board_pack("fail"))
        clock.set(SLOT + timedelta(hours=2))
        drain(c)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "herald.services.dependencies"]
    assert lines == [("INFO", "run waiting for upstream data"), ("ERROR", "dependency timed out: run failed")]
    waiting, failed = [r for r in caplog.records if r.name == "herald.services.dependencies"]
    assert waiting.run_id == run_id and waiting.needs.startswith("warehouse-etl 2026-11-02 (waited 2h")  # type: ignore[attr-defined]
    assert failed.run_id == run_id and failed.error.startswith("upstream data not complete")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", ("WARNING", "dependency timed out: run skipped")),
        ("send_anyway", ("WARNING", "dependency timed out: sending anyway")),
    ],
)
def test_the_other_policies_are_logged(tmp_path, clock, caplog, policy, expected):
    c, run_id = start(tmp_path, clock, board_pack(policy))
    clock.set(SLOT + timedelta(hours=2))
    with caplog.at_level(logging.WARNING, logger="herald.services.dependencies"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        drain(c)
    (line,) = [r for r in caplog.records if r.name == "herald.services.dependencies"]
    assert (line.levelname, line.getMessage()) == expected
    assert line.run_id == run_id and line.note  # type: ignore[attr-defined]
