"""services/incidents.py, edges of an incident's life (its docstring; README "Monitoring":
one message when it opens, one all-clear when a run succeeds): a finding is posted unless
the caller says otherwise, and a problem found after the all-clear opens a new incident
of its own, even for a slot told before or at the very instant the last one closed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import incidents as inc
from herald.services.runs import new_run
from tests import factories
from tests.unit.test_services_incidents import REPORT, SLOT, finding, slot_key


@pytest.fixture
def c(tmp_path):
    return factories.container(tmp_path, FakeClock(SLOT))


def told(c, kind):
    return [a for a in c.store.list_alerts(limit=100) if a.kind == kind]


def test_a_new_incident_is_posted_to_ops_unless_the_caller_summarises_it(c):
    assert inc.record(c, finding(), SLOT) == inc.NEW
    incident = inc.open_incident(c, REPORT, "late")
    assert set(incident.channels) == {"slack"} and incident.channels["slack"].target == "#reporting-ops"
    assert len(c.queue.tasks) == 1  # its one ops message, on its way


def test_a_slot_told_again_after_the_all_clear_opens_a_new_incident(c):
    first = SLOT
    inc.record(c, finding(key=slot_key(0)), first)
    opened = inc.open_incident(c, REPORT, "late")
    inc.close(c, REPORT, "late", "07:05 succeeded", first + timedelta(minutes=10))
    # Later the same slot is found missed: ops hear of it as a new incident.
    later = first + timedelta(minutes=20)
    assert inc.record(c, finding(key=slot_key(0), state="missed", subject="Missed: x"), later) == inc.NEW
    reopened = inc.open_incident(c, REPORT, "late")
    assert reopened.id != opened.id and reopened.subject == "Missed: x"
    assert reopened.params == {f"slot:{slot_key(0)}": "missed"}
    assert len(told(c, "incident_late")) == 2
    inc.close(c, REPORT, "late", "07:20 succeeded", later + timedelta(minutes=5))
    assert sorted(a.subject for a in told(c, "incident_late_resolved")) == [  # each incident has its all-clear
        "Resolved: Board pack: 1 slot late (not started), 2026-11-02 07:00 GMT; 07:05 succeeded",
        "Resolved: Board pack: 1 slot missed, 2026-11-02 07:00 GMT; 07:20 succeeded",
    ]


def test_incidents_opened_and_closed_within_one_instant_are_each_their_own(c):
    inc.record(c, finding(key=slot_key(0)), SLOT)
    opened = inc.open_incident(c, REPORT, "late")
    inc.close(c, REPORT, "late", "07:00 succeeded", SLOT)
    assert inc.record(c, finding(key=slot_key(1), subject="Late: y"), SLOT) == inc.NEW
    reopened = inc.open_incident(c, REPORT, "late")
    assert reopened.id != opened.id and reopened.subject == "Late: y"
    assert reopened.params == {f"slot:{slot_key(1)}": "not started"}
    assert len(told(c, "incident_late")) == 2


def test_an_incident_lost_in_a_crash_is_still_closed_with_an_all_clear(c, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    # The pointer is claimed, then the process dies before the incident is stored.
    monkeypatch.setattr(inc.alerts, "ops_alert", crash)
    with pytest.raises(OSError):
        inc.record(c, finding(), SLOT)
    monkeypatch.undo()
    assert inc.close(c, REPORT, "late", "07:00 succeeded", SLOT + timedelta(minutes=5)) is True
    (resolved,) = told(c, "incident_late_resolved")
    assert resolved.subject == "Resolved: Board pack: an incident; 07:00 succeeded"
    first, what, then = resolved.body.splitlines()
    assert first.startswith("Incident: ") and len(first) > len("Incident: ")
    assert (what, then) == ("What happened: an incident", "Then: 07:00 succeeded (2026-11-02 07:05 UTC)")


class Racing:
    """The store, with another watchdog pass (``rival``) slipping in just before this
    pass's first conditional write."""

    def __init__(self, store, rival):
        self._store, self._rival = store, rival

    def __getattr__(self, name):
        return getattr(self._store, name)

    def mutate_alert(self, alert_id, change):
        rival, self._rival = self._rival, None
        if rival is not None:
            rival()
        return self._store.mutate_alert(alert_id, change)


def test_racing_passes_open_one_incident_and_both_slots_join_it(c):
    store = c.store
    c.store = Racing(store, lambda: inc.record(c, finding(key=slot_key(1), subject="Late: rival"), SLOT))
    assert inc.record(c, finding(key=slot_key(0), subject="Late: mine"), SLOT) == inc.UPDATED
    c.store = store
    (incident,) = told(c, "incident_late")
    assert incident.subject == "Late: rival"
    assert incident.params == {f"slot:{slot_key(1)}": "not started", f"slot:{slot_key(0)}": "not started"}
    assert incident.body.splitlines() == ["first body", "2026-11-02 07:00 UTC: Late: mine"]
    assert inc.open_incident(c, REPORT, "late").id == incident.id
    # The slot's marker learnt the incident it joined: the all-clear names both slots.
    inc.close(c, REPORT, "late", "07:02 succeeded", SLOT + timedelta(minutes=5))
    (resolved,) = told(c, "incident_late_resolved")
    assert (
        resolved.subject
        == "Resolved: Board pack: 2 slots late (not started), 2026-11-02 07:00-07:01 GMT; 07:02 succeeded"
    )


def test_of_two_racing_closes_one_says_the_all_clear(c):
    inc.record(c, finding(), SLOT)
    store = c.store
    later = SLOT + timedelta(minutes=5)
    c.store = Racing(store, lambda: inc.close(c, REPORT, "late", "07:00 succeeded", later))
    assert inc.close(c, REPORT, "late", "07:00 succeeded", later) is False
    c.store = store
    assert len(told(c, "incident_late_resolved")) == 1


def test_a_scheduled_success_says_when_it_succeeded_in_the_all_clear(c):
    inc.record(c, finding(), SLOT)
    run = new_run(REPORT, "s1", "schedule", SLOT, slot=SLOT, status=RunStatus.SUCCEEDED)
    inc.run_finished(c, REPORT, run, SLOT + timedelta(minutes=4))
    (resolved,) = told(c, "incident_late_resolved")
    assert resolved.subject == (
        "Resolved: Board pack: 1 slot late (not started), 2026-11-02 07:00 GMT; 2026-11-02 07:00 GMT succeeded"
    )
    assert resolved.body.splitlines()[-1] == "Then: 2026-11-02 07:00 GMT succeeded (2026-11-02 07:04 UTC)"


def test_a_failed_scheduled_run_with_no_late_incident_is_not_told_by_default(c):
    run = new_run(REPORT, "s1", "schedule", SLOT, slot=SLOT, status=RunStatus.FAILED)
    inc.run_finished(c, REPORT, run.model_copy(update={"error": "render failed: boom"}), SLOT)
    assert told(c, "failed_run") == []


def test_every_failed_run_is_told_once_when_asked_for_with_its_run_and_report(tmp_path, monkeypatch):
    loud = factories.container(tmp_path, FakeClock(SLOT), watchdog_notify_failed_runs=True)
    monkeypatch.setenv("TZ", "America/New_York")  # the host's zone is no part of what ops read
    time.tzset()
    try:
        for run_id in ("s1", "s2"):
            run = new_run(REPORT, run_id, "schedule", SLOT, slot=SLOT, status=RunStatus.FAILED)
            inc.run_finished(loud, REPORT, run.model_copy(update={"error": "boom"}), SLOT + timedelta(minutes=9))
            inc.run_finished(loud, REPORT, run.model_copy(update={"error": "boom"}), SLOT + timedelta(minutes=9))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    messages = sorted(told(loud, "failed_run"), key=lambda a: a.run_id)
    assert [(a.run_id, a.report_id) for a in messages] == [("s1", "board-pack"), ("s2", "board-pack")]
    assert messages[0].subject == "Failed: Board pack for 2026-11-02 07:00 GMT ended failed"  # no incident: not late
    assert messages[0].body == "Run s1 ended failed at 2026-11-02 07:09 UTC: boom"
