"""services/watchdog.py edges: missed runs older than MISSED_LOOKBACK were told by earlier
passes (so an old one alone says nothing), a missed run that must wait does not hide the
others, and the summary of a capped pass lists up to 100 subjects, then "(and N more)"."""

from __future__ import annotations

from datetime import timedelta

from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import watchdog as wd
from tests import factories
from tests.unit import test_services_watchdog as base
from tests.unit.test_services_watchdog import SLOT, incidents, make_run

c = base.c  # the fixture: board-pack, whose schedule the tick has handled today


def test_a_missed_run_older_than_the_lookback_alone_is_not_told_again(c):
    now = SLOT + timedelta(days=2, minutes=30)
    c.store.save_report(factories.report(), SLOT + timedelta(days=3))  # the tick is up to date
    make_run(c, "old", RunStatus.MISSED, created_at=now - wd.MISSED_LOOKBACK - timedelta(seconds=1))
    wd.run_watchdog(c, now)
    assert incidents(c) == []


def test_a_missed_run_that_waits_does_not_hide_an_older_one(c):
    make_run(c, "r1", RunStatus.MISSED, created_at=SLOT + timedelta(minutes=15))
    later = SLOT + timedelta(minutes=16)  # newer, so listed first
    make_run(c, "gone", RunStatus.MISSED, report_id="deleted", slot=SLOT, created_at=later)
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    assert [a.run_id for a in incidents(c)] == ["r1"]


def summary_of(tmp_path, reports):
    c = factories.container(tmp_path, FakeClock(SLOT), watchdog_max_alerts=1)
    for i in range(reports):
        c.store.save_report(factories.report(id=f"r{i:03d}"), SLOT)
    wd.run_watchdog(c, SLOT + timedelta(minutes=21))
    (summary,) = [a for a in c.store.list_alerts(limit=1000) if a.kind == "watchdog_summary"]
    return summary


def test_a_summary_of_a_hundred_and_one_names_a_hundred_and_one_more(tmp_path):
    summary = summary_of(tmp_path, 102)  # one posted, 101 summarised
    assert summary.subject == "…and 101 more watchdog alerts"
    lines = summary.body.splitlines()
    assert len(lines) == 101 and lines[-1] == "(and 1 more)"


def test_a_summary_of_a_hundred_is_only_their_subjects(tmp_path):
    lines = summary_of(tmp_path, 101).body.splitlines()
    assert len(lines) == 100
    assert all(
        line.startswith("- Late: ") and line.endswith(" for 2026-11-02 07:00 UTC is not started") for line in lines
    )
