"""HttpHeartbeat against a real local server recording what each monitor style receives."""

from __future__ import annotations

import logging
import uuid

import pytest

from herald.adapters.heartbeat import HttpHeartbeat, ping_url, run_rid, url_style
from tests.adapters.local_http import Reply, closed_port_url, local_server

CHECK = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
RUN = "r0123456789abcdef01234567"


def ok(seen: object) -> Reply:
    return Reply(200, b"OK")


def test_healthchecks_style_pings_start_success_and_fail_with_one_rid_per_run() -> None:
    routes = {f"/{CHECK}": ok, f"/{CHECK}/start": ok, f"/{CHECK}/fail": ok}
    with local_server(routes) as server:
        heartbeat = HttpHeartbeat(timeout_seconds=2)
        url = f"{server.url}/{CHECK}"
        results = [heartbeat.ping(url, state, RUN) for state in ("start", "success", "fail")]
        heartbeat.ping(url, "start", "r-another-run")

    assert results == [True, True, True]
    assert [seen.path for seen in server.seen] == [f"/{CHECK}/start", f"/{CHECK}", f"/{CHECK}/fail", f"/{CHECK}/start"]
    rids = [seen.query["rid"][0] for seen in server.seen]
    assert rids[0] == rids[1] == rids[2] == run_rid(RUN)
    assert uuid.UUID(rids[0]).version == 5
    assert rids[3] != rids[0]


def test_cronitor_style_by_marker_sends_state_and_series_on_the_same_path() -> None:
    with local_server({"/p/API-KEY/board-pack": ok}) as server:
        heartbeat = HttpHeartbeat(timeout_seconds=2)
        url = f"{server.url}/p/API-KEY/board-pack#cronitor"
        results = [heartbeat.ping(url, state, RUN) for state in ("start", "success", "fail")]

    assert results == [True, True, True]
    assert {seen.path for seen in server.seen} == {"/p/API-KEY/board-pack"}
    assert [seen.query for seen in server.seen] == [
        {"state": [state], "series": [RUN]} for state in ("run", "complete", "fail")
    ]


def test_styles_are_detected_from_the_host_or_the_marker() -> None:
    assert url_style("https://cronitor.link/p/key/job") == "cronitor"
    assert url_style("https://hb.cronitor.io/p/key/job") == "cronitor"
    assert url_style("https://hc-ping.com/uuid") == "healthchecks"
    assert url_style("https://notcronitor.link.example.com/x") == "healthchecks"
    assert url_style("https://monitor.internal/ping/x#cronitor") == "cronitor"
    assert url_style("https://cronitor.link/p/key/job#healthchecks") == "healthchecks"


def test_ping_urls_keep_existing_query_and_drop_the_marker() -> None:
    assert ping_url("https://cronitor.link/p/key/job?env=prod&state=x", "success", RUN) == (
        f"https://cronitor.link/p/key/job?env=prod&state=complete&series={RUN}"
    )
    assert ping_url("https://hc.example.com/ping/key/board-pack/?create=1#healthchecks", "fail", RUN) == (
        f"https://hc.example.com/ping/key/board-pack/fail?create=1&rid={run_rid(RUN)}"
    )


def test_a_non_2xx_answer_is_false() -> None:
    with local_server({}) as server:  # every path is a 404, as for an unknown check
        assert HttpHeartbeat(timeout_seconds=2).ping(f"{server.url}/{CHECK}", "success", RUN) is False


def test_a_monitor_that_is_down_is_false_and_logged_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald.adapters.heartbeat")

    assert HttpHeartbeat(timeout_seconds=2).ping(f"{closed_port_url()}/{CHECK}", "start", RUN) is False

    (record,) = caplog.records
    assert record.getMessage() == "heartbeat failed"
    assert record.__dict__["run_id"] == RUN
    assert CHECK not in caplog.text and CHECK not in str(record.__dict__)


def test_a_slow_monitor_times_out_and_is_false(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald.adapters.heartbeat")
    with local_server({f"/{CHECK}": lambda seen: Reply(200, b"OK", hold=True)}) as server:
        assert HttpHeartbeat(timeout_seconds=0.2).ping(f"{server.url}/{CHECK}", "success", RUN) is False

    assert [r.getMessage() for r in caplog.records] == ["heartbeat timed out"]


def test_a_malformed_url_is_false_not_an_exception() -> None:
    assert HttpHeartbeat(timeout_seconds=1).ping("http://[::1", "start", RUN) is False
