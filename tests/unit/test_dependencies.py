"""The dependency gate on a moved clock: release by event, by re-check, stale records
ignored, and each timeout policy (fail, send anyway with a note, skip)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from herald.domain.reports import parse_duration
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import dependencies
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import EXECUTE_RUN
from tests import factories
from tests.drive import drain
from tests.web.serving import served_on_loopback

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # board pack for 2026-11-02, 07:00 London
ETL = "warehouse-etl"


def board_pack(on_timeout: str = "fail", period: str = "same", **overrides):
    return factories.report(
        heartbeat_url="https://hc.example/ping/abc",
        depends_on=[{"job": ETL, "period": period, "wait_up_to": "2h", "on_timeout": on_timeout}],
        **overrides,
    )


@pytest.fixture
def clock():
    return FakeClock(SLOT - timedelta(minutes=1))


def start(tmp_path, clock, definition):
    c = factories.container(tmp_path, clock)
    apply_definitions(c, [definition])
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    return c, run_id


def status(c, run_id):
    return c.store.get_run(run_id).status


def etl_done(c, period="2026-11-02", **extra):
    return dependencies.record_job_status(c, {"job": ETL, "period": period, "status": "succeeded", **extra})


def test_a_run_waits_and_is_released_the_moment_its_record_arrives(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    assert status(c, run_id) == RunStatus.WAITING
    # /start as it begins to wait, so the monitor times the whole run; nothing sent yet
    assert c.mailer.sent == {} and [s for _, s, _ in c.heartbeat.pings] == ["start"]
    clock.advance(minutes=1)
    record, created = etl_done(c)
    assert created and record["period"] == "2026-11-02"
    drain(c)  # no time passes: the record itself released the run
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED and run.note == ""
    assert sorted(c.mailer.sent) == ["a@example.com", "b@example.com"]
    assert [s for _, s, _ in c.heartbeat.pings] == ["start", "success"]


def test_a_repeated_record_is_kept_once(tmp_path, clock):
    c, _ = start(tmp_path, clock, board_pack())
    first, _ = etl_done(c, details={"rows": 10})
    again, created = etl_done(c, details={"rows": 11})
    assert not created and again == first


def test_a_record_written_straight_into_the_store_is_found_by_the_re_check(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    c.store.put_job_status(ETL, "2026-11-02", {"status": "succeeded", "completed_at": "2026-11-02T07:01:00Z"})
    clock.advance(minutes=4, seconds=59)
    drain(c)
    assert status(c, run_id) == RunStatus.WAITING
    clock.advance(seconds=1)  # the 5-minute re-check
    drain(c)
    assert status(c, run_id) == RunStatus.SUCCEEDED


def test_re_checks_do_not_multiply_however_often_the_run_is_executed(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    from herald.services import runs

    for _ in range(5):
        runs.execute_run(c, run_id)
    etl_done(c, period="2026-11-01")  # a record another run needs: no release of this one
    execute = [t for t in c.queue.pending if t.path == EXECUTE_RUN]
    assert [t.eta for t in execute] == [SLOT + timedelta(minutes=5)]


def test_a_stale_period_record_never_releases_a_newer_run(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    etl_done(c, period="2026-11-01")  # yesterday's ETL
    for _ in range(6):
        clock.advance(minutes=5)
        drain(c)
    assert status(c, run_id) == RunStatus.WAITING


def test_previous_day_period_needs_yesterdays_record(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack(period="previous_day"))
    etl_done(c, period="2026-11-02")
    drain(c)
    assert status(c, run_id) == RunStatus.WAITING
    etl_done(c, period="2026-11-01")
    drain(c)
    assert status(c, run_id) == RunStatus.SUCCEEDED


def test_timeout_fail_fails_the_run_and_alerts_the_owner(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("fail"))
    clock.set(SLOT + timedelta(hours=2) - timedelta(seconds=1))
    drain(c)
    assert status(c, run_id) == RunStatus.WAITING
    clock.set(SLOT + timedelta(hours=2))  # the deadline re-check
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.FAILED and "warehouse-etl 2026-11-02" in run.error
    (alert,) = c.mailer.sent["cfo@example.com"]
    assert "failed" in alert.subject and "warehouse-etl" in alert.text
    assert "a@example.com" not in c.mailer.sent
    assert [s for _, s, _ in c.heartbeat.pings] == ["start", "fail"]
    etl_done(c)  # too late: nothing changes
    drain(c)
    assert status(c, run_id) == RunStatus.FAILED


def test_timeout_send_anyway_sends_with_a_data_as_of_note(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("send_anyway"))
    etl_done(c, period="2026-11-01", completed_at="2026-11-01T05:30:00+00:00")
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.note.startswith("Data as of 01 Nov 2026 05:30 UTC (warehouse-etl 2026-11-01)")
    assert run.note in c.mailer.sent["a@example.com"][0].text


def test_timeout_send_anyway_without_any_record_says_data_may_be_incomplete(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("send_anyway"))
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    assert c.store.get_run(run_id).note.startswith("Data may be incomplete: warehouse-etl 2026-11-02")


def test_timeout_skip_skips_the_run_and_sends_nothing(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack("skip"))
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SKIPPED and run.note.startswith("Skipped: upstream data")
    assert c.mailer.sent == {}


def test_the_strictest_expired_policy_wins(tmp_path, clock):
    definition = factories.report(
        depends_on=[
            {"job": ETL, "wait_up_to": "1h", "on_timeout": "send_anyway"},
            {"job": "fx-rates", "wait_up_to": "90m", "on_timeout": "skip"},
        ]
    )
    c, run_id = start(tmp_path, clock, definition)
    clock.set(SLOT + timedelta(hours=1))
    drain(c)
    assert status(c, run_id) == RunStatus.WAITING  # fx-rates may still come
    clock.set(SLOT + timedelta(minutes=90))
    drain(c)
    assert status(c, run_id) == RunStatus.SKIPPED


@pytest.mark.parametrize(
    "body",
    [
        {"job": ETL, "period": "2026/11/02", "status": "succeeded"},
        {"job": ETL, "period": "2026-11-02", "status": "failed"},
        {"job": "", "period": "2026-11-02", "status": "succeeded"},
        {"job": ETL, "period": "2026-11-02", "status": "succeeded", "typo": 1},
        {"job": ETL, "period": "2026-11-02", "status": "succeeded", "completed_at": "2026-11-02T07:00:00"},
        None,
    ],
)
def test_invalid_job_status_is_refused(tmp_path, body):
    c = factories.container(tmp_path)
    with pytest.raises(ValidationError):
        dependencies.record_job_status(c, body)
    response = served_on_loopback(c).test_client().post("/api/job-status", json=body)
    assert response.status_code == (415 if body is None else 400)  # no JSON body at all: not JSON


def test_the_api_records_and_releases(tmp_path, clock):
    c, run_id = start(tmp_path, clock, board_pack())
    client = served_on_loopback(c).test_client()
    body = {"job": ETL, "period": "2026-11-02", "status": "succeeded", "details": {"rows": 1200}}
    first = client.post("/api/job-status", json=body)
    assert first.status_code == 201 and first.get_json()["record"]["details"] == {"rows": 1200}
    assert client.post("/api/job-status", json=body).status_code == 200
    assert client.get(f"/api/job-status/{ETL}/2026-11-02").get_json()["status"] == "succeeded"
    assert client.get(f"/api/job-status/{ETL}/2026-11-03").status_code == 404
    drain(c)
    assert status(c, run_id) == RunStatus.SUCCEEDED


@pytest.mark.parametrize(("text", "minutes"), [("20m", 20), ("2h", 120), ("1h30m", 90), ("1d", 1440), ("45s", 0.75)])
def test_durations(text, minutes):
    assert parse_duration(text) == timedelta(minutes=minutes)


@pytest.mark.parametrize("text", ["", "2", "2x", "0m", "32d", "h"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(ValidationError):
        board_pack(watchdog_grace=text)
