"""services/on_time.py edges: a schedule with no slot in the last 30 days (past its grace)
has an empty record for each window, like a report with no scheduled run yet."""

from __future__ import annotations

from herald.services import on_time as ot
from tests import factories
from tests.unit import test_services_on_time as base
from tests.unit.test_services_on_time import NOW

c = base.c  # the fixture: an embedded container at NOW (30 Nov 2026)


def test_a_schedule_without_a_slot_in_the_windows_is_an_empty_record_per_window(c):
    yearly = factories.report(schedule={"cron": "0 7 1 1 *", "timezone": "Europe/London"})  # 1 January only
    assert [r.to_doc() for r in ot.on_time(c, yearly, NOW)] == [
        {"days": 7, "slots": 0, "on_time": 0, "share": None},
        {"days": 30, "slots": 0, "on_time": 0, "share": None},
    ]
