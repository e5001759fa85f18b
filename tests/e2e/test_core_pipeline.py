"""End-to-end on the embedded backend: a real `herald serve`, real HTTP, real SQLite."""

from __future__ import annotations

import collections
import itertools
from datetime import datetime

import pytest

from tests.e2e.harness import HeraldProcess
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
