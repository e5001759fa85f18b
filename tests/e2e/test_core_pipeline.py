"""End-to-end on the embedded backend: a real `herald serve`, real HTTP, real SQLite."""

from __future__ import annotations

import collections
import email
import itertools
from datetime import datetime

import pytest

from tests.e2e.harness import HeraldProcess, wait_until
from tests.factories import recipients
from tests.support.sendgrid_sink import SendGridSink

pytestmark = pytest.mark.e2e

DELAYS = (0.5, 1.0, 1.5)


def definition(report_id: str, emails: list[str], **extra):
    return {
        "id": report_id,
        "name": "Client weekly",
        "owner": "owner@example.com",
        "source": {"type": "pdf", "title": "Weekly", "data": {"columns": ["k", "v"], "rows": [["a", 1]]}},
        "recipients": {"email": emails},
        **extra,
    }


@pytest.fixture
def sink():
    with SendGridSink() as server:
        yield server


def test_200_recipients_with_transient_and_permanent_failures(tmp_path, sink):
    people = recipients(200)
    transient = people[:20]  # fail twice, then succeed
    exhausted = people[20:25]  # fail every time: retries run out
    permanent = people[25:35]  # 400: never retried
    for address in transient:
        sink.server_error(address, times=2, status=503)
    for address in exhausted:
        sink.server_error(address, times=100, status=500)
    for address in permanent:
        sink.reject(address, 400)
    herald = HeraldProcess(
        tmp_path / "data",
        [definition("weekly", people)],
        env={
            "HERALD_SENDGRID_API_KEY": "SG.test",
            "HERALD_SENDGRID_HOST": sink.url,
            "HERALD_RETRY_DELAYS": ",".join(str(d) for d in DELAYS),
        },
    ).start()
    try:
        run_id = herald.start_run("weekly")
        run = herald.wait_for_run(run_id, timeout=120)
        deliveries = herald.deliveries(run_id)
    finally:
        assert herald.stop() == 0
    assert run["status"] == "partial"
    by_recipient = {d["recipient"]: d for d in deliveries}
    assert len(by_recipient) == 200
    assert {d["status"] for d in deliveries} <= {"sent", "failed"}
    failed = {r for r, d in by_recipient.items() if d["status"] == "failed"}
    assert failed == set(exhausted) | set(permanent)

    # Nobody got two messages: the sink accepted exactly one per delivered recipient.
    accepted = collections.Counter(a.recipient for a in sink.accepted if a.recipient != "owner@example.com")
    assert set(accepted.values()) == {1}
    assert set(accepted) == set(people) - failed

    # Permanent failures were tried once; exhausted ones 1 + 3 retries; transient ones on the third try.
    for address in permanent:
        assert by_recipient[address]["attempts"] == 1
    for address in exhausted:
        assert by_recipient[address]["attempts"] == 4
        assert "gave up after 4 attempts" in by_recipient[address]["last_error"]
    for address in transient:
        assert by_recipient[address]["attempts"] == 3 and by_recipient[address]["status"] == "sent"

    # Retries happened at the configured delays (never earlier; the queue adds only its poll latency).
    for address in exhausted:
        times = [datetime.fromisoformat(e["at"]) for e in by_recipient[address]["attempt_log"]]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert len(gaps) == 3
        for gap, delay in zip(gaps, DELAYS, strict=True):
            assert delay <= gap < delay + 5, (address, gaps)

    # The owner got exactly one alert, listing every failure (permanent and exhausted).
    owner_mail = sink.accepted_for("owner@example.com")
    assert len(owner_mail) == 1
    alert_text = owner_mail[0].body["content"][0]["value"]
    for address in failed:
        assert address in alert_text
    assert "15 of 200 recipients" in alert_text


def test_kill_9_mid_fan_out_loses_nothing_and_sends_nothing_twice(tmp_path):
    people = recipients(1000)
    data = tmp_path / "data"
    env = {"HERALD_LEASE_SECONDS": "2", "HERALD_WORKER_THREADS": "4"}
    herald = HeraldProcess(data, [definition("big", people)], env=env).start()
    run_id = herald.start_run("big")
    mail_dir = data / "outbox" / "mail"

    def some_sent() -> bool:
        return mail_dir.exists() and len(list(mail_dir.glob("*.eml"))) >= 100

    wait_until(some_sent, 60, "the fan-out to be under way", every=0.01)
    herald.kill()
    sent_before = len(list(mail_dir.glob("*.eml")))
    assert sent_before < 1000, "the run finished before the crash; the test proves nothing"

    restarted = HeraldProcess(data, [definition("big", people)], env=env, port=herald.port).start()
    try:
        run = restarted.wait_for_run(run_id, timeout=180)
        deliveries = restarted.deliveries(run_id)
    finally:
        assert restarted.stop() == 0
    assert run["status"] == "succeeded"
    assert len(deliveries) == 1000 and {d["status"] for d in deliveries} == {"sent"}
    files = list(mail_dir.glob("*.eml"))
    to = collections.Counter(email.message_from_bytes(f.read_bytes())["To"] for f in files)
    assert sorted(to) == sorted(people) and set(to.values()) == {1}
