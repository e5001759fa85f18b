"""Heartbeats from the services: start when rendering begins, success or fail when the
run settles, and a monitor that is down never changes a run's outcome."""

from __future__ import annotations

from datetime import timedelta

from herald.adapters.heartbeat import HttpHeartbeat
from herald.domain.ids import heartbeat_id
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services.scheduling import apply_definitions, tick
from tests import factories
from tests.drive import drain
from tests.e2e.harness import free_port
from tests.fakes import StaticSource
from tests.unit.test_pipeline import SLOT


def scheduled_run(tmp_path, url, source=None):
    clock = FakeClock(SLOT - timedelta(minutes=1))
    c = factories.container(tmp_path, clock)
    if source is not None:
        c.source = source
    apply_definitions(c, [factories.report(heartbeat_url=url)])
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    return c, c.store.get_run(run_id)


def test_healthchecks_and_cronitor_urls_get_start_then_success(tmp_path):
    for url in ("https://hc-ping.com/0f3e", "https://cronitor.link/p/key/board-pack"):
        c, run = scheduled_run(tmp_path / url.split("/")[2], url)
        assert c.heartbeat.pings == [(url, "start", run.id), (url, "success", run.id)]


def test_a_failed_run_pings_fail(tmp_path):
    c, run = scheduled_run(tmp_path, "https://hc-ping.com/0f3e", StaticSource(fail="reporting API down"))
    assert run.status == RunStatus.FAILED
    assert [state for _, state, _ in c.heartbeat.pings] == ["start", "fail"]


def test_a_monitor_that_is_down_has_no_effect_on_the_run(tmp_path):
    clock = FakeClock(SLOT - timedelta(minutes=1))
    c = factories.container(tmp_path, clock)
    # the real adapter, to a port nobody listens on (loopback allowed, as tests' monitors are local)
    c.heartbeat = HttpHeartbeat(timeout_seconds=2, allow_private=True)
    apply_definitions(c, [factories.report(heartbeat_url=f"http://127.0.0.1:{free_port()}/ping/abc")])
    clock.set(SLOT)
    run_id = tick(c).started[0]
    drain(c)
    for delay in c.settings.heartbeat_retry_delays:  # the pings retry on their own short schedule
        clock.advance(seconds=delay)
        drain(c)
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED and sorted(c.mailer.sent) == ["a@example.com", "b@example.com"]
    assert not run.heartbeat_sent  # it means "the monitor acknowledged", and it did not
    final = c.store.get_alert(heartbeat_id("success", run_id))
    attempts = 1 + len(c.settings.heartbeat_retry_delays)
    assert final.channels["heartbeat"].status == "failed" and final.channels["heartbeat"].attempts == attempts
