from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from herald.domain.reports import Schedule
from herald.domain.schedules import next_fire_times, slots_between


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_london_follows_bst_and_gmt():
    times = next_fire_times(Schedule(cron="0 7 * * *", timezone="Europe/London"), utc(2026, 10, 23), 4)
    # 07:00 BST = 06:00 UTC until the clocks go back on 25 October, then 07:00 GMT = 07:00 UTC.
    assert times == [utc(2026, 10, 23, 6), utc(2026, 10, 24, 6), utc(2026, 10, 25, 7), utc(2026, 10, 26, 7)]


def test_spring_forward_gap_fires_once_shifted_forward_london():
    # 01:30 does not exist in London on 29 March 2026; it fires once at 02:30 BST (01:30 UTC).
    times = next_fire_times(Schedule(cron="30 1 * * *", timezone="Europe/London"), utc(2026, 3, 28, 2), 2)
    assert times == [utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]


def test_fall_back_repeat_fires_once_new_york():
    # 01:30 happens twice in New York on 1 November 2026; only the first (EDT, 05:30 UTC) fires.
    times = next_fire_times(Schedule(cron="30 1 * * *", timezone="America/New_York"), utc(2026, 10, 31, 12), 2)
    assert times == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_half_hourly_through_new_york_spring_forward_has_no_duplicates():
    times = next_fire_times(Schedule(cron="*/30 * * * *", timezone="America/New_York"), utc(2026, 3, 8, 6), 6)
    assert times == sorted(set(times))
    # 02:00 and 02:30 EST do not exist; they collapse onto 03:00/03:30 EDT, each firing once.
    assert times == [
        utc(2026, 3, 8, 6, 30),  # 01:30 EST
        utc(2026, 3, 8, 7, 0),  # "02:00" -> 03:00 EDT
        utc(2026, 3, 8, 7, 30),  # "02:30" -> 03:30 EDT
        utc(2026, 3, 8, 8, 0),  # 04:00 EDT
        utc(2026, 3, 8, 8, 30),
        utc(2026, 3, 8, 9, 0),
    ]


def test_hourly_during_london_fall_back_skips_the_repeated_hour_once():
    times = next_fire_times(Schedule(cron="0 * * * *", timezone="Europe/London"), utc(2026, 10, 24, 23, 30), 4)
    # 00:00 BST (23:00 UTC), 01:00 BST (00:00 UTC); the second 01:00 (GMT) does not fire again.
    assert times == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3), utc(2026, 10, 25, 4)]


def test_the_31st_fires_only_in_months_that_have_it():
    times = next_fire_times(Schedule(cron="0 9 31 * *"), utc(2026, 1, 1), 4)
    assert [t.month for t in times] == [1, 3, 5, 7]


def test_last_day_of_month():
    times = next_fire_times(Schedule(cron="0 9 L * *"), utc(2026, 1, 1), 3)
    assert [t.day for t in times] == [31, 28, 31]


def test_a_cron_that_never_fires_is_refused():
    with pytest.raises(ValidationError, match="never fires"):
        Schedule(cron="0 9 30 2 *")


@pytest.mark.parametrize("cron", ["61 * * * *", "* * *", "every day", "0 25 * * *", "* * * * * *"])
def test_invalid_cron_is_refused(cron: str):
    with pytest.raises(ValidationError, match="invalid cron"):
        Schedule(cron=cron)


def test_unknown_zone_is_refused():
    with pytest.raises(ValidationError, match="unknown time zone"):
        Schedule(cron="0 7 * * *", timezone="Mars/Olympus")


def test_naive_after_is_refused():
    with pytest.raises(ValueError):
        next_fire_times(Schedule(cron="0 7 * * *"), datetime(2026, 1, 1), 1)


def test_slots_between_keeps_the_most_recent():
    schedule = Schedule(cron="* * * * *")
    slots = slots_between(schedule, utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 10), limit=3)
    assert slots == [utc(2026, 1, 1, 0, 8), utc(2026, 1, 1, 0, 9), utc(2026, 1, 1, 0, 10)]


def test_a_tick_just_after_the_gap_still_fires_the_shifted_slot():
    # 30 seconds after London springs forward (01:00 UTC), the 01:30 slot (shifted to 02:30 BST) is still ahead.
    schedule = Schedule(cron="30 1 * * *", timezone="Europe/London")
    assert next_fire_times(schedule, utc(2026, 3, 29, 1, 0, 30), 1) == [utc(2026, 3, 29, 1, 30)]
