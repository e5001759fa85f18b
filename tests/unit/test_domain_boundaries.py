"""domain/ boundaries, from the docstrings and README "Report definitions": period labels
(``2026-W48`` for a week, the ISO week-numbering year at a year's edge; ``previous_month``
is the month before the slot's, across a year's edge), fire times (aware UTC whatever the
host's own zone, a spring-forward gap's slot still fires right after the transition, only
an aware ``after`` is accepted, a schedule that never fires has no next fire time), and
the definition error an operator reads for a header with a line break, and where
notification records live (pings and bookkeeping apart from the alerts people read, each
in a collection whose Firestore TTL Terraform declares, so neither grows forever)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import herald
from herald.domain.ids import alert_id, heartbeat_id, notification_collection
from herald.domain.periods import period_label
from herald.domain.reports import DefinitionError, Schedule, parse_definitions
from herald.domain.schedules import fire_times_after, next_fire_time, next_fire_times


# Period labels --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("instant", "zone", "label"),
    [
        (datetime(2026, 11, 29, 12, 0, tzinfo=UTC), "UTC", "2026-W48"),  # a Sunday: its week began 23 Nov
        (datetime(2026, 11, 30, 12, 0, tzinfo=UTC), "UTC", "2026-W49"),  # the Monday after
        (datetime(2027, 1, 1, 12, 0, tzinfo=UTC), "UTC", "2026-W53"),  # 2026 began on a Thursday: 53 weeks
        (datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "Asia/Tokyo", "2026-W49"),  # already Monday in Tokyo
    ],
)
def test_a_week_is_labelled_by_its_iso_year_and_number(instant, zone, label):
    assert period_label("week", instant, zone) == label


@pytest.mark.parametrize(
    ("instant", "zone", "label"),
    [
        (datetime(2026, 3, 15, 12, 0, tzinfo=UTC), "UTC", "2026-02"),
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), "UTC", "2026-02"),  # the 1st: still the month before
        (datetime(2026, 3, 31, 23, 0, tzinfo=UTC), "UTC", "2026-02"),  # the last day of a 31-day month
        (datetime(2026, 1, 10, 12, 0, tzinfo=UTC), "UTC", "2025-12"),  # across the year's edge
        (datetime(2026, 11, 30, 20, 0, tzinfo=UTC), "Asia/Tokyo", "2026-11"),  # 1 December in Tokyo
    ],
)
def test_previous_month_is_the_month_before_the_slots_own(instant, zone, label):
    assert period_label("previous_month", instant, zone) == label


# Fire times ------------------------------------------------------------------------------------
@pytest.fixture
def host_zone(monkeypatch):
    """Set the host's own time zone (TZ) for one test."""

    def set_zone(name):
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("host", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_fire_times_are_utc_and_the_same_whatever_the_hosts_zone(host_zone, host):
    host_zone(host)
    daily = Schedule(cron="0 7 * * *", timezone="Europe/London")
    after = datetime(2026, 11, 2, 6, 59, tzinfo=UTC)
    fires = next_fire_times(daily, after, 2)
    assert fires == [datetime(2026, 11, 2, 7, 0, tzinfo=UTC), datetime(2026, 11, 3, 7, 0, tzinfo=UTC)]
    assert [f.utcoffset() for f in fires] == [timedelta(0), timedelta(0)]
    assert [f.isoformat() for f in fires] == ["2026-11-02T07:00:00+00:00", "2026-11-03T07:00:00+00:00"]


@pytest.mark.parametrize("host", ["UTC", "America/New_York", "Europe/Lisbon"])
def test_a_gap_slot_fires_shifted_right_after_a_spring_forward_into_utc(host_zone, host):
    # Azores, 29 March 2026: 00:00 (UTC-1) jumps to 01:00 (UTC+0). A 00:30 slot does not
    # exist that day; it fires shifted by the gap, at 01:30 local = 01:30 UTC. Asked at 01:10,
    # just after the jump, that shifted slot is still ahead.
    host_zone(host)
    azores = Schedule(cron="30 0 * * *", timezone="Atlantic/Azores")
    after = datetime(2026, 3, 29, 1, 10, tzinfo=UTC)
    assert next_fire_times(azores, after, 2) == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 00:30 local, UTC+0 now
    ]


def test_a_gap_slot_in_london_fires_once_shifted_by_the_gap():
    # London, 29 March 2026: 01:00 GMT jumps to 02:00 BST; 01:30 fires at 02:30 BST (01:30 UTC).
    london = Schedule(cron="30 1 * * *", timezone="Europe/London")
    assert next_fire_times(london, datetime(2026, 3, 29, 0, 0, tzinfo=UTC), 2) == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]
    assert next_fire_time(london, datetime(2026, 3, 29, 1, 10, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_a_repeated_wall_time_fires_once_at_its_first_occurrence():
    # London, 25 October 2026: 02:00 BST falls back to 01:00 GMT; 01:30 happens twice.
    london = Schedule(cron="30 1 * * *", timezone="Europe/London")
    assert next_fire_times(london, datetime(2026, 10, 25, 0, 0, tzinfo=UTC), 2) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 01:30 BST
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # the next day, 01:30 GMT
    ]


def test_a_naive_after_is_refused_by_name():
    daily = Schedule(cron="0 7 * * *", timezone="Europe/London")
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        next(fire_times_after(daily, datetime(2026, 11, 2, 6, 59)))  # a naive wall time


def test_a_schedule_that_never_fires_has_no_next_fire_time():
    # 30 February: validation refuses it; a stored one (older definitions) still must not crash.
    never = Schedule.model_construct(cron="0 0 30 2 *", timezone="UTC")
    assert next_fire_time(never, datetime(2026, 11, 2, tzinfo=UTC)) is None
    assert next_fire_times(never, datetime(2026, 11, 2, tzinfo=UTC), 3) == []


# Definition errors ------------------------------------------------------------------------------
def test_a_header_with_a_line_break_is_refused_with_the_reason():
    raw = {
        "id": "board-pack",
        "name": "Board pack",
        "owner": "cfo@example.com",
        "source": {"type": "http", "url": "https://reports.example.com/x", "headers": {"X-Note": "a\r\nBcc: x"}},
        "recipients": {"email": ["a@example.com"]},
    }
    with pytest.raises(DefinitionError) as caught:
        parse_definitions({"reports": [raw]})
    (problem,) = caught.value.problems
    assert problem.startswith("report 'board-pack': source.")
    assert "headers" in problem
    assert problem.endswith(": must not contain line breaks or control characters")


# Where notification records live ---------------------------------------------------------------
def test_notification_records_live_in_collections_firestore_expires():
    index_file = Path(herald.__file__).parent / "adapters" / "gcp" / "firestore_indexes.json"
    overrides = json.loads(index_file.read_text())["fieldOverrides"]
    expiring = {o["collectionGroup"] for o in overrides if o["fieldPath"] == "expire_at" and o.get("ttl")}
    ping = notification_collection(heartbeat_id("success", "r1"))
    owner_alert = notification_collection(alert_id("run_failed", "r1"))
    assert ping != owner_alert  # pings and bookkeeping apart from the alerts people read
    assert ping in expiring and owner_alert in expiring
