"""services/dependencies.py edges, from its docstrings and README "Report definitions": the
gate's decisions are stamped with their time, a waiting run's task answers "waiting", only
waiting runs are released, every send_anyway dependency adds its own "Data as of" sentence
(manual runs too), and completion times without a zone are UTC whatever the server's zone."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from herald.domain.states import RunStatus
from herald.services import dependencies as deps
from herald.services import runs
from herald.services.runs import new_run
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import EXECUTE_RUN
from tests import factories
from tests.drive import drain
from tests.unit.test_services_dependencies import ETL, SLOT, board_pack, start
from tests.unit.test_services_dependencies import clock as clock  # the fixture: a minute before the slot


def two_send_anyway():
    return factories.report(
        depends_on=[
            {"job": ETL, "period": "same", "wait_up_to": "1h", "on_timeout": "send_anyway"},
            {"job": "crm", "period": "same", "wait_up_to": "1h", "on_timeout": "send_anyway"},
        ]
    )


def released_runs(c):
    return sorted(t.payload["run_id"] for t in c.queue.tasks.values() if t.name.startswith("release-"))


# Waiting ------------------------------------------------------------------------------------
def test_a_run_that_starts_waiting_answers_waiting_and_is_stamped_then(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [board_pack()])
    clock.set(SLOT)
    (run_id,) = tick(c).started
    later = clock.advance(seconds=30)  # the execute task runs a little after the tick
    outcome = runs.execute_run(c, run_id)
    assert outcome.run is not None and outcome.run.status == RunStatus.WAITING
    stored = c.store.get_run(run_id)
    assert stored.status == RunStatus.WAITING and stored.updated_at == later


# Timeouts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("policy", "status"), [("fail", RunStatus.FAILED), ("skip", RunStatus.SKIPPED)])
def test_a_timed_out_run_is_stamped_with_the_decision_time(tmp_path, clock, policy, status):
    definition = board_pack(policy)
    c, run_id = start(tmp_path, clock, definition)
    deadline = SLOT + timedelta(hours=2)
    clock.set(deadline)
    held = deps.hold(c, definition, c.store.get_run(run_id))
    assert held is not None and held.status == status
    stored = c.store.get_run(run_id)
    assert (stored.status, stored.finished_at, stored.updated_at) == (status, deadline, deadline)


def test_send_anyway_is_stamped_with_the_decision_time(tmp_path, clock):
    definition = board_pack("send_anyway")
    c, run_id = start(tmp_path, clock, definition)
    deadline = SLOT + timedelta(hours=2)
    clock.set(deadline)
    assert deps.hold(c, definition, c.store.get_run(run_id)) is None  # it may start now
    stored = c.store.get_run(run_id)
    assert stored.updated_at == deadline and stored.note.startswith("Data may be incomplete: ")


def test_each_late_send_anyway_dependency_adds_its_own_sentence(tmp_path, clock):
    c, run_id = start(tmp_path, clock, two_send_anyway())
    clock.set(SLOT + timedelta(hours=1))
    drain(c)
    assert c.store.get_run(run_id).note == (
        "Data may be incomplete: warehouse-etl 2026-11-02 had not completed by 02 Nov 2026 08:00 UTC. "
        "Data may be incomplete: crm 2026-11-02 had not completed by 02 Nov 2026 08:00 UTC."
    )


def test_a_manual_run_sent_anyway_says_when_its_data_was_last_complete(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [board_pack("send_anyway")])
    clock.set(SLOT)
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    assert run.slot is None
    c.store.put_job_status(ETL, "2026-11-01", {"completed_at": "2026-11-01T06:30:00+00:00"})
    drain(c)
    clock.set(SLOT + timedelta(hours=2))  # the manual run's deadline: its creation + wait_up_to
    drain(c)
    stored = c.store.get_run(run.id)
    assert stored.status == RunStatus.SUCCEEDED
    assert stored.note == (
        "Data as of 01 Nov 2026 06:30 UTC (warehouse-etl 2026-11-01): "
        "warehouse-etl 2026-11-02 had not completed by 02 Nov 2026 09:00 UTC."
    )


@pytest.fixture
def server_in_new_york(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_completion_time_without_zone_is_utc_whatever_the_servers_zone(tmp_path, clock, server_in_new_york):
    c, run_id = start(tmp_path, clock, board_pack("send_anyway"))
    c.store.put_job_status(ETL, "2026-11-01", {"completed_at": "2026-11-01T06:30:00"})  # written by an upstream job
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    assert c.store.get_run(run_id).note.startswith("Data as of 01 Nov 2026 06:30 UTC (warehouse-etl 2026-11-01): ")


# Release ------------------------------------------------------------------------------------
def test_a_record_releases_only_runs_still_waiting(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    for i, status in enumerate([RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.PENDING]):
        c.store.create_run(new_run(board_pack(), f"z-{i}", "manual", SLOT + timedelta(minutes=i + 1), status=status))
    assert deps.release_waiting(c, ETL, "2026-11-02") == 1
    assert released_runs(c) == [run_id]


def test_a_waiting_run_of_a_removed_report_does_not_hold_up_the_others(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    orphan = new_run(factories.report(id="gone"), "z-gone", "manual", SLOT + timedelta(minutes=1))
    c.store.create_run(orphan.model_copy(update={"status": RunStatus.WAITING}))  # listed before ours
    earlier = new_run(board_pack(), "earlier", "manual", SLOT - timedelta(minutes=1), status=RunStatus.WAITING)
    c.store.create_run(earlier)
    assert deps.release_waiting(c, ETL, "2026-11-02") == 2
    assert released_runs(c) == sorted([run_id, "earlier"])
    assert all(t.path == EXECUTE_RUN for t in c.queue.tasks.values() if t.name.startswith("release-"))


def test_a_waiting_run_executed_by_a_worker_whose_clock_is_behind_still_queues_its_recheck(tmp_path, clock):
    # Workers' clocks differ by milliseconds. A run executed "before" it was created must
    # still get its re-check: without one it waits until a record or the watchdog moves it.
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [board_pack()])
    clock.set(SLOT)
    run, _ = runs.start_manual_run(c, "board-pack")
    before = {t.name for t in c.queue.tasks.values()}
    clock.set(SLOT - timedelta(milliseconds=1))
    outcome = runs.execute_run(c, run.id)
    assert outcome.run is not None and outcome.run.status == RunStatus.WAITING
    queued = [t for t in c.queue.tasks.values() if t.name not in before and t.payload.get("run_id") == run.id]
    every = timedelta(seconds=c.settings.dependency_recheck_seconds)
    assert [(t.path, t.eta) for t in queued] == [(EXECUTE_RUN, SLOT + every)]
