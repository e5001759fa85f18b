"""services/scheduling.py edges: a slot exactly at the misfire limit is inside the window
(test_a_slot_exactly_at_the_misfire_limit_still_runs), so with catch-up "latest" it is
recorded as a catch-up, not as past the window; and a tick's reconciler pass looks at the
tick's own time (Cloud Scheduler's schedule time), not the instance clock."""

from __future__ import annotations

from datetime import timedelta

from herald.services import scheduling as s
from herald.services.runs import new_run
from tests import factories
from tests.unit import test_services_scheduling as base
from tests.unit.test_services_scheduling import MINUTELY, SLOT, notes

c, clock = base.c, base.clock  # the fixtures: board-pack, a clock a minute before its slot


def test_a_slot_exactly_at_the_misfire_limit_skipped_by_catch_up_says_catch_up(tmp_path, clock):
    c = factories.container(tmp_path, clock)
    s.apply_definitions(c, [factories.report(schedule=MINUTELY, catchup="latest")])
    now = SLOT + timedelta(seconds=c.settings.misfire_seconds)  # 07:00 is exactly at the limit
    result = s.tick(c, now)
    assert c.store.get_run(result.started[0]).slot == now
    assert set(notes(c, result.missed)) == {"Not run: catch-up: only the latest slot runs"}


def test_the_reconciler_pass_of_a_tick_looks_at_the_ticks_time(c, clock):
    clock.set(SLOT)
    stalled = new_run(factories.report(), "stalled", "manual", SLOT - timedelta(minutes=4))  # stale at 07:05 only
    c.store.create_run(stalled)
    assert s.tick(c, SLOT + timedelta(minutes=5)).reconciled == 1
