"""HttpHeartbeat against a real local server recording what each monitor style receives.

The adapter acknowledges or raises DeliveryError (transient: retry inside the monitor's
grace; permanent: a retry cannot help); the notification that carries the ping retries."""

from __future__ import annotations

import logging
import uuid

import pytest

from herald import __version__
from herald.adapters.heartbeat import HttpHeartbeat, ping_url, run_rid, url_style
from herald.domain.errors import DeliveryError
from tests.adapters.local_http import Reply, closed_port_url, local_server

CHECK = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
RUN = "r0123456789abcdef01234567"


def ok(seen: object) -> Reply:
    return Reply(200, b"OK")


def local(timeout: float = 2) -> HttpHeartbeat:
    return HttpHeartbeat(timeout_seconds=timeout, allow_private=True)  # the test monitor is on loopback


def test_healthchecks_style_pings_start_success_and_fail_with_one_rid_per_run() -> None:
    routes = {f"/{CHECK}": ok, f"/{CHECK}/start": ok, f"/{CHECK}/fail": ok}
    with local_server(routes) as server:
        heartbeat = local()
        url = f"{server.url}/{CHECK}"
        for state in ("start", "success", "fail"):
            heartbeat.ping(url, state, RUN, f"Board pack 07:00: {state}")
        heartbeat.ping(url, "start", "r-another-run")

    assert {seen.method for seen in server.seen} == {"POST"}  # the body is the ping's log line
    assert server.seen[2].body == b"Board pack 07:00: fail"
    assert server.seen[0].headers["User-Agent"].startswith(f"Herald/{__version__}")
    assert [seen.path for seen in server.seen] == [f"/{CHECK}/start", f"/{CHECK}", f"/{CHECK}/fail", f"/{CHECK}/start"]
    rids = [seen.query["rid"][0] for seen in server.seen]
    assert rids[0] == rids[1] == rids[2] == run_rid(RUN)
    assert uuid.UUID(rids[0]).version == 5
    assert rids[3] != rids[0]


def test_cronitor_style_by_marker_sends_state_and_series_on_the_same_path() -> None:
    with local_server({"/p/API-KEY/board-pack": ok}) as server:
        heartbeat = local()
        url = f"{server.url}/p/API-KEY/board-pack#cronitor"
        for state in ("start", "success", "fail"):
            heartbeat.ping(url, state, RUN, "" if state == "start" else "2 sent")

    assert {seen.path for seen in server.seen} == {"/p/API-KEY/board-pack"}
    assert [seen.query for seen in server.seen] == [
        {"state": ["run"], "series": [RUN]},
        {"state": ["complete"], "series": [RUN], "message": ["2 sent"]},
        {"state": ["fail"], "series": [RUN], "message": ["2 sent"]},
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


def test_an_unknown_check_is_a_permanent_failure_and_a_503_a_transient_one() -> None:
    with local_server({f"/{CHECK}": lambda seen: Reply(503, b"busy")}) as server:
        with pytest.raises(DeliveryError) as busy:
            local().ping(f"{server.url}/{CHECK}", "success", RUN)
        with pytest.raises(DeliveryError) as unknown:  # every other path is a 404, as for an unknown check
            local().ping(f"{server.url}/other", "success", RUN)
    assert not busy.value.permanent and unknown.value.permanent


def test_a_monitor_that_is_down_is_transient_and_logged_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald.adapters.heartbeat")

    with pytest.raises(DeliveryError) as down:
        local().ping(f"{closed_port_url()}/{CHECK}", "start", RUN)

    assert not down.value.permanent
    (record,) = caplog.records
    assert record.getMessage() == "heartbeat failed"
    assert record.__dict__["run_id"] == RUN
    assert CHECK not in caplog.text and CHECK not in str(record.__dict__)


def test_a_slow_monitor_times_out_as_a_transient_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald.adapters.heartbeat")
    hung = {f"/{CHECK}": lambda seen: Reply(200, b"OK", hold=True)}
    with local_server(hung) as server, pytest.raises(DeliveryError) as slow:
        local(timeout=0.2).ping(f"{server.url}/{CHECK}", "success", RUN)

    assert not slow.value.permanent
    assert [r.getMessage() for r in caplog.records] == ["heartbeat timed out"]


def test_a_malformed_url_is_a_permanent_failure_not_a_crash() -> None:
    with pytest.raises(DeliveryError) as bad:
        local(timeout=1).ping("http://[::1", "start", RUN)
    assert bad.value.permanent


def test_metadata_and_unallowed_private_monitors_are_refused_before_any_request() -> None:
    with local_server({f"/{CHECK}": ok}) as server:
        with pytest.raises(DeliveryError) as private:
            HttpHeartbeat(timeout_seconds=1).ping(f"{server.url}/{CHECK}", "start", RUN)
        with pytest.raises(DeliveryError) as metadata:
            local().ping("http://169.254.169.254/computeMetadata/v1/", "start", RUN)
    assert private.value.permanent and metadata.value.permanent and server.seen == []
