"""Fire times of a cron schedule in a report's own time zone.

croniter iterates naive wall-clock times; each wall time is then placed in the zone
with ``fold=0``. That gives the DST behaviour people expect from a calendar:
- fall-back: a wall time that occurs twice fires once (at its first occurrence);
- spring-forward: a wall time that does not exist fires once, shifted forward by the
  gap (01:30 on the London spring-forward day fires at 02:30 BST). Two wall times that
  land on the same instant fire once.
All returned times are aware UTC and strictly increasing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from herald.domain.reports import Schedule

_DST_WINDOW = timedelta(hours=3)  # the largest shift in tzdata is 2 hours (Antarctica/Troll)
_MAX_SCAN = 10_000  # wall times inspected before giving up (a cron that never fires)


def fire_times_after(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Yield fire times (aware UTC) strictly after ``after``, in order."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = ZoneInfo(schedule.timezone)
    start_wall = after.astimezone(zone).replace(tzinfo=None)
    if (after - _DST_WINDOW).astimezone(zone).utcoffset() != after.astimezone(zone).utcoffset():
        # Just after a transition, wall times before ``after``'s own can still lie ahead
        # (a spring-forward gap's shifted slots): start a few hours early and let the filter drop the past.
        start_wall -= _DST_WINDOW
    walls = croniter(schedule.cron, start_wall, ret_type=datetime)
    last = after
    for _ in range(_MAX_SCAN):
        try:
            wall: datetime = walls.get_next(datetime)
        except CroniterBadDateError:  # e.g. 30 February: the expression never fires
            return
        instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if instant > last:
            last = instant
            yield instant
    # A valid cron that has not fired in 10,000 candidates (e.g. 30 February) never fires.


def next_fire_time(schedule: Schedule, after: datetime) -> datetime | None:
    return next(fire_times_after(schedule, after), None)


def next_fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    return list(islice(fire_times_after(schedule, after), count))


def slots_between(schedule: Schedule, first: datetime, until: datetime, limit: int) -> list[datetime]:
    """Fire times in [first, until], at most ``limit`` (the most recent are kept)."""
    slots: list[datetime] = []
    for instant in fire_times_after(schedule, first - timedelta(microseconds=1)):
        if instant > until:
            break
        slots.append(instant)
        if len(slots) > limit:
            slots.pop(0)
    return slots
