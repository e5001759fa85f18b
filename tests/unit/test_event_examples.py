"""examples/: the event-triggered definitions are valid, the sample events start what
they say, and send_event.py signs exactly as Herald verifies."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from herald.domain.reports import parse_definitions
from herald.domain.states import RunStatus
from herald.services.scheduling import apply_definitions
from herald.web.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests import factories
from tests.drive import drain
from tests.web.serving import served_on_loopback

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRETS = {"salesforce": "dev-sf-secret", "erp": "dev-erp-secret"}


def send_event_module():
    spec = importlib.util.spec_from_file_location("send_event", EXAMPLES / "send_event.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_signer_signs_as_herald_verifies():
    assert send_event_module().sign("s", "1700000000", b"{}") == signature("s", "1700000000", b"{}")


def test_the_sample_events_start_the_client_report_and_the_waiting_board_pack(tmp_path):
    c = factories.container(tmp_path, event_secrets=SECRETS)
    apply_definitions(c, parse_definitions(yaml.safe_load((EXAMPLES / "events.yaml").read_text())))
    client = served_on_loopback(c).test_client()
    sign = send_event_module().sign

    def post(source: str, name: str):
        body = json.dumps(json.loads((EXAMPLES / "events" / name).read_text())).encode()
        stamp = str(int(c.clock.now().timestamp()))
        headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(SECRETS[source], stamp, body)}
        response = client.post(f"/webhooks/events/{source}", data=body, headers=headers)
        assert response.status_code == 202, response.get_json()
        (run_id,) = response.get_json()["runs"]
        return run_id

    first = post("salesforce", "deal_closed.json")
    board = post("erp", "erp_month_end_close.json")
    drain(c)
    run = c.store.get_run(first)
    assert run.status == RunStatus.SUCCEEDED and run.params["client_name"] == "Acme Ltd"
    assert {"cfo@acme.example", "ops@acme.example", "account-manager@example.com"} <= set(c.mailer.sent)
    assert c.store.get_run(board).status == RunStatus.WAITING and c.store.get_run(board).period == "2026-10"
    etl = json.loads((EXAMPLES / "events" / "etl_complete.json").read_text())
    assert client.post("/api/job-status", json=etl).status_code == 201
    drain(c)
    assert c.store.get_run(board).status == RunStatus.SUCCEEDED
    assert "Board pack for 2026-10 (closed ledger GL)" in c.mailer.sent["board@example.com"][0].text
