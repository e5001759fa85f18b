"""Exactly once, counted where it lands: a real `herald serve` sends through its SendGrid
adapter, renders from an http source and pings a Healthchecks-style monitor, all served
by a separate process (tests/support/counting_sink.py) that counts what arrived. Nothing
here trusts Herald's own records for the count.

- kill -9 mid fan-out, restart: no recipient gets the report twice; every recipient either
  got it once (``sent``) or is reported ``unknown`` (its send was in flight at the kill and
  no event can confirm it) — listed in the owner alert, never re-sent blindly.
- a storm of concurrent redeliveries of every task route: one render, one owner alert per
  channel, one ping per state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path

import pytest
import requests

from herald.domain.ids import heartbeat_id  # a ping's record id, to replay its task
from tests.e2e.counting import OWNER, report, sendgrid_env
from tests.e2e.harness import HeraldProcess, alive, child_processes, wait_until
from tests.factories import recipients

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-worker-processes"])
def test_kill_9_mid_fan_out_sends_nothing_twice_counted_at_the_sink(tmp_path, counting, processes):
    sink = counting()
    people = recipients(1000)
    data = tmp_path / "data"
    env = sendgrid_env(
        sink, HERALD_LEASE_SECONDS="2", HERALD_WORKER_THREADS="4", HERALD_WORKER_PROCESSES=str(processes)
    )
    definitions = [report("big", people, sink)]
    herald = HeraldProcess(data, definitions, env=env).start()
    assert herald.proc is not None
    server = herald.proc.pid
    workers = wait_until(lambda: child_processes(server) if processes > 1 else [-1], 30, "the worker to start")
    run_id = herald.start_run("big")

    def some_accepted() -> bool:
        return sum(sink.counts()["mail"].values()) >= 100

    wait_until(some_accepted, 60, "the fan-out to be under way", every=0.01)
    herald.kill()
    if processes > 1:  # no sender outlives the server it worked for
        wait_until(lambda: not any(alive(p) for p in workers), 40, "the worker process to exit")
    accepted_at_kill = sum(sink.counts()["mail"].values())
    assert accepted_at_kill < 1000, "the run finished before the crash; the test proves nothing"

    restarted = HeraldProcess(data, definitions, env=env, port=herald.port).start()
    try:
        run = restarted.wait_for_run(run_id, timeout=180)
        deliveries = restarted.deliveries(run_id)
    finally:
        assert restarted.stop() == 0
    mail = sink.counts()["mail"]
    by_status: dict[str, list[str]] = {}
    for d in deliveries:
        by_status.setdefault(d["status"], []).append(d["recipient"])
    assert len(deliveries) == 1000 and set(by_status) <= {"sent", "unknown"}
    assert all(mail.get(p, 0) <= 1 for p in people), "a recipient got the report twice"
    assert all(mail.get(p) == 1 for p in by_status["sent"])  # recorded sent = accepted exactly once
    unknown = by_status.get("unknown", [])
    duplicates = sum(1 for p in people if mail.get(p, 0) > 1)
    print(
        f"kill -9 at {accepted_at_kill} accepted of 1000: after restart {len(by_status['sent'])} sent, "
        f"{len(unknown)} unknown (in flight at the kill, not re-sent), {duplicates} duplicates, run {run['status']}"
    )
    assert len(unknown) <= 4 * processes  # at most the sends in flight at the kill (4 workers a process)
    if unknown:  # honest about it: the run is partial and the owner hears which ones
        assert run["status"] == "partial" and mail.get(OWNER) == 1
    else:
        assert run["status"] == "succeeded" and OWNER not in mail


def internal_token(data_dir: Path) -> str:
    """From the documented rule (web/auth.py): HMAC-SHA256 of a fixed label under the data dir's key."""
    key = (data_dir / "secret.key").read_text().strip().encode()
    return hmac.new(key, b"herald-internal-call", hashlib.sha256).hexdigest()


def storm(url: str, token: str, path: str, body: dict[str, str], times: int = 10) -> list[int]:
    """``times`` concurrent deliveries of one task, as Cloud Tasks and Pub/Sub may redeliver."""
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(times)

    def one() -> None:
        barrier.wait()
        response = requests.post(
            f"{url}{path}",
            data=json.dumps(body),
            headers={"X-Herald-Internal": token, "Content-Type": "application/json"},
            timeout=60,
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return statuses


def test_a_storm_of_redeliveries_renders_once_alerts_once_pings_once(tmp_path, counting):
    sink = counting("--reject", "bad@example.com", "--source-delay", "0.5")
    people = [*recipients(20), "bad@example.com"]
    data = tmp_path / "data"
    # No worker threads: this test is the queue, and it redelivers every task ten times at once.
    env = sendgrid_env(sink, HERALD_WORKER_THREADS="0")
    definitions = [
        report(
            "storm",
            people,
            sink,
            source={"type": "http", "url": f"{sink.url}/report.pdf", "timeout_seconds": 10},
            heartbeat_url=f"{sink.url}/ping/5bd0b9a6-58d4-4d2b-9d0b-3c5f0e0a1c11",
        )
    ]
    herald = HeraldProcess(data, definitions, env=env).start()
    try:
        run_id = herald.start_run("storm")
        token = internal_token(data)
        statuses = storm(herald.url, token, "/tasks/runs/execute", {"run_id": run_id})
        assert set(statuses) <= {200, 503} and 200 in statuses, statuses
        assert sink.counts()["renders"] == 1, (herald.run(run_id), statuses, herald.log_tail())
        deliveries = herald.deliveries(run_id)
        assert len(deliveries) == len(people)
        for d in deliveries:
            codes = storm(herald.url, token, "/tasks/deliveries/send", {"delivery_id": d["id"]}, times=5)
            assert 500 not in codes and set(codes) <= {200, 503}, codes
        statuses = storm(herald.url, token, "/tasks/runs/finish", {"run_id": run_id})
        assert 500 not in statuses
        wait_until(lambda: herald.run(run_id)["status"] == "partial", 30, "the run to settle")
        alerts = herald.api("GET", "/alerts").json()
        assert "alerts" in alerts, alerts
        (owner_alert,) = [a for a in alerts["alerts"] if a.get("kind") == "delivery_failures"]
        statuses = storm(
            herald.url, token, "/tasks/notifications/send", {"alert_id": owner_alert["id"], "channel": "email"}
        )
        assert 500 not in statuses
        # the start ping and the final ping, each once, however often their tasks are replayed
        for state in ("start", "fail"):
            body = {"alert_id": heartbeat_id(state, run_id), "channel": "heartbeat"}
            assert 500 not in storm(herald.url, token, "/tasks/notifications/send", body)
        counts = sink.counts()
    finally:
        assert herald.stop() == 0
    mail = counts["mail"]
    print(
        f"storm (10 replays of each task): renders {counts['renders']}, owner alerts {mail.get(OWNER, 0)}, "
        f"pings {len(counts['pings'])}, duplicates {sum(1 for p in people if mail.get(p, 0) > 1)}"
    )
    assert counts["renders"] == 1
    assert all(mail.get(p) == 1 for p in people if p != "bad@example.com") and "bad@example.com" not in mail
    assert mail.get(OWNER) == 1, "one owner alert however many finish and notification tasks raced"
    final = [p for p in counts["pings"] if p[1].endswith("/fail")]
    starts = [p for p in counts["pings"] if p[1].endswith("/start")]
    assert len(final) == 1 and len(starts) == 1 and len(counts["pings"]) == 2
    assert final[0][0] == "POST" and "storm" in final[0][2] and "partial" in final[0][2]  # the outcome line
