"""services/incidents.py: one incident per report and cause, updated while it lasts and
closed with one all-clear that names what happened (its docstring: "3 slots missed
18:53-18:55; 18:56 succeeded"; ARCHITECTURE.md decision 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.ids import scheduled_run_id
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import incidents as inc
from herald.services.runs import new_run
from tests import factories

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
REPORT = factories.report()  # Europe/London: GMT in November


@pytest.fixture
def c(tmp_path):
    return factories.container(tmp_path, FakeClock(SLOT))


def finding(key="2026-11-02T07:00:00+00:00", state="not started", cause="late", report=REPORT, subject="Late: x"):
    return inc.Finding(report=report, cause=cause, key=key, state=state, subject=subject, body="first body")


def slot_key(minutes):
    return (SLOT + timedelta(minutes=minutes)).isoformat()


def test_summary_groups_slots_by_state_in_the_reports_zone():
    params = {
        f"slot:{slot_key(0)}": "missed",
        f"slot:{slot_key(2)}": "missed",
        f"slot:{slot_key(1)}": "missed",
        f"slot:{slot_key(3)}": "pending",
    }
    assert inc.summary(REPORT, params) == (
        "3 slots missed, 2026-11-02 07:00-07:02 GMT; 1 slot late (pending), 2026-11-02 07:03 GMT"
    )


def test_summary_spanning_days_names_the_last_date():
    params = {f"slot:{slot_key(0)}": "missed", f"slot:{(SLOT + timedelta(days=1)).isoformat()}": "missed"}
    assert inc.summary(REPORT, params) == "2 slots missed, 2026-11-02 07:00-2026-11-03 07:00 GMT"


def test_summary_counts_what_is_not_a_slot_and_falls_back_to_an_incident():
    assert inc.summary(None, {"run-1": "rendering", "run-2": "rendering", "run-3": "pending"}) == (
        "1 x pending; 2 x rendering"
    )
    assert inc.summary(REPORT, {}) == "an incident"
    assert inc.summary(None, {f"slot:{slot_key(0)}": "missed"}) == "1 slot missed, 2026-11-02 07:00 UTC"


def test_when_reads_the_slot_or_creation_in_the_reports_zone():
    scheduled = new_run(REPORT, "r", "schedule", SLOT, slot=SLOT)
    manual = new_run(factories.report(schedule=None), "m", "manual", SLOT + timedelta(hours=1))
    assert inc.when(REPORT, scheduled) == "2026-11-02 07:00 GMT"
    assert inc.when(factories.report(schedule=None), manual) == "2026-11-02 08:00 UTC"


def test_an_incident_opens_once_and_later_findings_join_it(c):
    assert inc.record(c, finding(), SLOT) == inc.NEW
    opened = inc.open_incident(c, REPORT, "late")
    assert opened is not None and opened.kind == "incident_late" and opened.subject == "Late: x"
    assert opened.body == "first body" and opened.target == "#reporting-ops" and opened.report_id == "board-pack"
    assert inc.record(c, finding(), SLOT + timedelta(minutes=5)) == inc.SAME  # told in this state already
    later = SLOT + timedelta(minutes=1, seconds=30)
    assert inc.record(c, finding(key=slot_key(1), subject="Late: y"), later) == inc.UPDATED
    assert inc.record(c, finding(state="missed"), later) == inc.UPDATED  # the same slot in a new state
    incident = inc.open_incident(c, REPORT, "late")
    assert incident.id == opened.id
    assert incident.params == {f"slot:{slot_key(0)}": "missed", f"slot:{slot_key(1)}": "not started"}
    assert incident.body.splitlines() == [
        "first body",
        "2026-11-02 07:01 UTC: Late: y",
        "2026-11-02 07:01 UTC: Late: x",
    ]
    assert inc.record(c, finding(state="missed"), later) == inc.SAME


def test_the_incident_body_keeps_the_last_8000_characters(c):
    inc.record(c, finding(), SLOT)
    for i in range(1, 200):
        inc.record(c, finding(key=slot_key(i), subject="Late: " + "y" * 60), SLOT + timedelta(minutes=i))
    body = inc.open_incident(c, REPORT, "late").body
    assert len(body) == 8000 and body.endswith("Late: " + "y" * 60)


def test_other_causes_and_reports_are_other_incidents(c):
    assert inc.record(c, finding(), SLOT) == inc.NEW
    assert inc.record(c, finding(cause="stuck", key="run-1", state="rendering"), SLOT) == inc.NEW
    other = factories.report(id="other")
    assert inc.record(c, finding(report=other), SLOT) == inc.NEW
    assert inc.record(c, finding(report=None, cause="tick", key="tick", state="silent"), SLOT) == inc.NEW
    stuck = inc.open_incident(c, REPORT, "stuck")
    assert stuck.params == {"run-1": "rendering"} and stuck.kind == "incident_stuck"
    assert inc.open_incident(c, None, "tick").report_id is None


def test_a_finding_recorded_without_posting_is_kept_not_sent(c):
    assert inc.record(c, finding(), SLOT, post=False) == inc.NEW
    incident = inc.open_incident(c, REPORT, "late")
    assert incident is not None and incident.channels == {}
    assert c.queue.tasks == {}


def test_a_new_incident_carries_its_run(c):
    f = inc.Finding(report=REPORT, cause="stuck", key="run-7", state="pending", subject="s", body="b", run_id="run-7")
    inc.record(c, f, SLOT)
    assert inc.open_incident(c, REPORT, "stuck").run_id == "run-7"


def test_closing_says_what_happened_once(c):
    inc.record(c, finding(key=slot_key(0)), SLOT)
    inc.record(c, finding(key=slot_key(1)), SLOT + timedelta(minutes=1))
    now = SLOT + timedelta(minutes=30)
    assert inc.close(c, REPORT, "late", "2026-11-02 07:02 GMT succeeded", now) is True
    assert inc.close(c, REPORT, "late", "again", now) is False
    assert inc.open_incident(c, REPORT, "late") is None
    (resolved,) = [a for a in c.store.list_alerts(limit=100) if a.kind == "incident_late_resolved"]
    told = "2 slots late (not started), 2026-11-02 07:00-07:01 GMT"
    assert resolved.subject == f"Resolved: Board pack: {told}; 2026-11-02 07:02 GMT succeeded"
    assert resolved.body.splitlines() == [
        "Incident: Late: x",
        f"What happened: {told}",
        "Then: 2026-11-02 07:02 GMT succeeded (2026-11-02 07:30 UTC)",
    ]
    assert resolved.report_id == "board-pack" and resolved.run_id is None
    assert inc.record(c, finding(key=slot_key(2)), now) == inc.NEW  # a later problem opens a new incident


def test_closing_the_tick_incident_names_the_scheduler(c):
    inc.record(c, finding(report=None, cause="tick", key="tick", state="silent (ENABLED)"), SLOT)
    inc.close(c, None, "tick", "the tick is running again", SLOT)
    (resolved,) = [a for a in c.store.list_alerts(limit=100) if a.kind == "incident_tick_resolved"]
    assert resolved.subject == "Resolved: the scheduler tick: 1 x silent (ENABLED); the tick is running again"
    assert resolved.report_id is None


def test_slots_the_tick_later_recorded_missed_are_said_as_missed(c):
    inc.record(c, finding(key=slot_key(0)), SLOT)
    missed = new_run(REPORT, scheduled_run_id("board-pack", SLOT), "schedule", SLOT, slot=SLOT, status=RunStatus.MISSED)
    c.store.create_run(missed)
    inc.close(c, REPORT, "late", "then it ran", SLOT + timedelta(minutes=30))
    (resolved,) = [a for a in c.store.list_alerts(limit=100) if a.kind == "incident_late_resolved"]
    assert resolved.subject == "Resolved: Board pack: 1 slot missed, 2026-11-02 07:00 GMT; then it ran"
    # The marker learnt it: being told "missed" again for that slot is nothing new.
    assert inc.record(c, finding(key=slot_key(0), state="missed"), SLOT + timedelta(minutes=31)) == inc.SAME


def test_stuck_incidents_are_closed_as_they_stood(c):
    inc.record(c, finding(cause="stuck", key="run-1", state="rendering"), SLOT)
    inc.close(c, REPORT, "stuck", "run run-1 succeeded", SLOT)
    (resolved,) = [a for a in c.store.list_alerts(limit=100) if a.kind == "incident_stuck_resolved"]
    assert resolved.subject == "Resolved: Board pack: 1 x rendering; run run-1 succeeded"


def test_a_late_run_that_fails_is_said_as_failed_and_the_incident_stays(c):
    inc.record(c, finding(), SLOT)
    run = new_run(REPORT, "r1", "schedule", SLOT, slot=SLOT, status=RunStatus.FAILED)
    run = run.model_copy(update={"error": "render failed: boom"})
    inc.run_finished(c, REPORT, run, SLOT + timedelta(minutes=40))
    (failed,) = [a for a in c.store.list_alerts(limit=100) if a.kind == "failed_run"]
    assert failed.subject == "Failed: Board pack for 2026-11-02 07:00 GMT ended failed (it was late)"
    assert failed.body == "Run r1 ended failed at 2026-11-02 07:40 UTC: render failed: boom"
    assert inc.open_incident(c, REPORT, "late") is not None


def test_failed_runs_are_told_only_when_late_or_asked_for(c, tmp_path):
    partial = new_run(REPORT, "r2", "manual", SLOT, status=RunStatus.PARTIAL)
    inc.run_finished(c, REPORT, partial, SLOT)
    assert [a for a in c.store.list_alerts(limit=100) if a.kind == "failed_run"] == []
    loud = factories.container(tmp_path / "loud", FakeClock(SLOT), watchdog_notify_failed_runs=True)
    inc.run_finished(loud, REPORT, partial, SLOT)
    (told,) = [a for a in loud.store.list_alerts(limit=100) if a.kind == "failed_run"]
    assert told.subject == "Failed: Board pack for 2026-11-02 07:00 GMT ended partial"
    assert told.body.endswith(": some recipients did not receive it")


def test_a_success_closes_late_only_for_scheduled_runs_and_always_closes_stuck(c):
    inc.record(c, finding(), SLOT)
    inc.record(c, finding(cause="stuck", key="m1", state="rendering"), SLOT)
    manual = new_run(REPORT, "m1", "manual", SLOT, status=RunStatus.SUCCEEDED)
    inc.run_finished(c, REPORT, manual, SLOT)
    assert inc.open_incident(c, REPORT, "late") is not None and inc.open_incident(c, REPORT, "stuck") is None
    (resolved,) = [a for a in c.store.list_alerts(limit=100) if a.kind == "incident_stuck_resolved"]
    assert resolved.subject.endswith("; run m1 2026-11-02 07:00 GMT succeeded")
    scheduled = new_run(REPORT, "s1", "schedule", SLOT, slot=SLOT, status=RunStatus.SUCCEEDED)
    inc.run_finished(c, REPORT, scheduled, SLOT)
    assert inc.open_incident(c, REPORT, "late") is None


def test_runs_still_going_change_nothing(c):
    inc.record(c, finding(), SLOT)
    inc.run_finished(c, REPORT, new_run(REPORT, "r", "schedule", SLOT, slot=SLOT, status=RunStatus.DELIVERING), SLOT)
    assert inc.open_incident(c, REPORT, "late") is not None
    assert [a for a in c.store.list_alerts(limit=100) if a.kind in ("failed_run", "incident_late_resolved")] == []
