"""End to end on the embedded backend (a real `herald serve`): an ERP close event starts
the board pack, which waits for the warehouse ETL's completion record and then delivers;
a report whose run never happens produces exactly one alert in a local Slack."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.adapters.embedded.sqlite_store import SQLiteStore
from herald.domain.reports import ReportDefinition
from herald.web.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests.e2e.harness import HeraldProcess, wait_until
from tests.support.httpbase import FakeHandler, FakeServer
from tests.support.slack_fake import SlackFake

pytestmark = pytest.mark.e2e

SECRET = "erp-e2e-secret"


def board_pack() -> dict[str, Any]:
    return {
        "id": "board-pack",
        "name": "Monthly board pack",
        "owner": "cfo@example.com",
        "period": "previous_month",
        "source": {"type": "pdf", "title": "Board pack", "data": {"columns": ["KPI", "Value"], "rows": [["Cash", 1]]}},
        "recipients": {"email": ["board@example.com", "ceo@example.com"]},
        "triggers": [{"source": "erp", "event": "period.closed", "conditions": {"$.data.ledger": "GL"}}],
        "depends_on": [{"job": "warehouse-etl", "period": "same", "wait_up_to": "1h", "on_timeout": "fail"}],
    }


def test_the_board_pack_waits_for_the_etl_then_delivers(tmp_path):
    herald = HeraldProcess(
        tmp_path / "data", [board_pack()], env={"HERALD_EVENT_SECRETS": json.dumps({"erp": SECRET})}
    ).start()
    try:
        body = json.dumps({"id": "GL-close-1", "type": "period.closed", "data": {"ledger": "GL"}}).encode()
        stamp = str(int(datetime.now(UTC).timestamp()))
        response = herald.session.post(
            f"{herald.url}/webhooks/events/erp",
            data=body,
            headers={TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(SECRET, stamp, body)},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        (run_id,) = response.json()["runs"]
        run = wait_until(lambda: (r := herald.run(run_id))["status"] == "waiting" and r, 30, "the run to wait")
        assert herald.deliveries(run_id) == []
        etl = {"job": "warehouse-etl", "period": run["period"], "status": "succeeded"}
        assert herald.api("POST", "/job-status", json=etl).status_code == 201
        final = herald.wait_for_run(run_id, timeout=60)
        assert final["status"] == "succeeded", final
        assert sorted(d["recipient"] for d in herald.deliveries(run_id)) == ["board@example.com", "ceo@example.com"]
        assert {d["status"] for d in herald.deliveries(run_id)} == {"sent"}
    finally:
        herald.stop()


class _Pings(FakeHandler):
    count = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with _Pings.lock:
            _Pings.count += 1
        self.reply(200, "OK")

    def do_POST(self) -> None:  # Healthchecks-style pings are POSTs carrying the outcome line
        self.read_body()
        self.do_GET()


def test_a_run_that_never_happens_is_one_alert_in_slack(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    # The report's slot passed 30 minutes ago while Herald was down: seed the schedule so.
    slot = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    definition = {
        "id": "daily-ops",
        "name": "Daily operations report",
        "owner": "ops-lead@example.com",
        "schedule": {"cron": f"{slot.minute} {slot.hour} * * *", "timezone": "UTC"},
        "source": {"type": "pdf", "data": {"columns": ["a"], "rows": [[1]]}},
        "recipients": {"email": ["ops@example.com"]},
    }
    store = SQLiteStore(data / "herald.db")
    store.save_report(ReportDefinition.model_validate(definition), slot)
    store.close()
    _Pings.count = 0
    with SlackFake() as slack, FakeServer(_Pings) as monitor:
        herald = HeraldProcess(
            data,
            [definition],
            env={
                "HERALD_SLACK_BOT_TOKEN": "xoxb-e2e",
                "HERALD_SLACK_API_URL": slack.api_url,
                "HERALD_WATCHDOG_INTERVAL_SECONDS": "0.3",
                "HERALD_WATCHDOG_HEARTBEAT_URL": f"{monitor.url}/ping/watchdog",
                "HERALD_ALLOW_PRIVATE_TARGETS": "true",  # the monitor is on loopback
            },
        ).start()
        try:
            wait_until(lambda: slack.received_for("#reporting-ops"), 30, "the ops alert")
            seen = _Pings.count
            wait_until(lambda: _Pings.count >= seen + 5, 30, "five more watchdog passes")
            alerts = slack.received_for("#reporting-ops")
            assert len(alerts) == 1, [a.text for a in alerts]
            assert "Daily operations report" in alerts[0].text and "missed" in alerts[0].text
            runs = herald.api("GET", "/runs?report_id=daily-ops").json()["runs"]
            assert [r["status"] for r in runs] == ["missed"]
        finally:
            herald.stop()
