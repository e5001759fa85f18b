"""End-to-end on the embedded backend with real channels: `herald serve` sends through the
SendGrid adapter to a local SendGrid-compatible sink and through the Slack adapter to a
local Slack fake, with injected 429s, 5xx and permanent errors; then signed Event Webhook
batches for the accepted messages come back and show in the delivery log via the API."""

from __future__ import annotations

import collections
import json
import time

import pytest
import requests

from tests.e2e.harness import HeraldProcess
from tests.factories import recipients
from tests.support.sendgrid_events import EventSigner
from tests.support.sendgrid_sink import SendGridSink
from tests.support.slack_fake import SlackFake

pytestmark = pytest.mark.e2e

OWNER = "owner@example.com"
CHANNELS = [f"C00000{i:02d}" for i in range(1, 6)]


def post_signed(herald, signer, body: bytes) -> requests.Response:
    headers = signer.headers(body, int(time.time()))
    return requests.post(f"{herald.url}/webhooks/sendgrid", data=body, headers=headers, timeout=30)


def test_500_emails_and_5_slack_channels_with_failures_then_signed_feedback(tmp_path):
    people = recipients(500)
    rate_limited, flaky, rejected = people[:15], people[15:30], people[30:35]
    signer = EventSigner()
    with SendGridSink() as sink, SlackFake() as slack:
        for address in rate_limited:  # 429 with X-RateLimit-Reset two seconds ahead, then accepted
            sink.rate_limit(address, times=1, reset_at=time.time() + 2)
        for address in flaky:
            sink.server_error(address, times=2, status=503)
        for address in rejected:
            sink.reject(address, 400)
        slack.rate_limit(CHANNELS[0], times=1, retry_after=1)
        slack.http_error(CHANNELS[1], 503, times=1)
        slack.api_error(CHANNELS[2], "channel_not_found")  # permanent
        herald = HeraldProcess(
            tmp_path / "data",
            [
                {
                    "id": "weekly",
                    "name": "Client weekly",
                    "owner": OWNER,
                    "source": {"type": "pdf", "title": "Weekly", "data": {"columns": ["k"], "rows": [["a"]]}},
                    "recipients": {"email": people, "slack": CHANNELS},
                }
            ],
            env={
                "HERALD_SENDGRID_API_KEY": "SG.e2e",
                "HERALD_SENDGRID_HOST": sink.url,
                "HERALD_SLACK_BOT_TOKEN": "xoxb-e2e",
                "HERALD_SLACK_API_URL": slack.api_url,
                "HERALD_RETRY_DELAYS": "0.5,1,1.5",
                "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_key,
            },
        ).start()
        try:
            run_id = herald.start_run("weekly")
            run = herald.wait_for_run(run_id, timeout=180)
            deliveries = {d["recipient"]: d for d in herald.deliveries(run_id)}

            assert run["status"] == "partial"
            assert len(deliveries) == 505
            failed = {r for r, d in deliveries.items() if d["status"] == "failed"}
            assert failed == set(rejected) | {CHANNELS[2]}

            # Exactly one accepted message per recipient that did not fail permanently.
            accepted = collections.Counter(a.recipient for a in sink.accepted if a.recipient != OWNER)
            assert set(accepted) == set(people) - set(rejected) and set(accepted.values()) == {1}
            for channel in CHANNELS:
                assert len(slack.received_for(channel)) == (0 if channel == CHANNELS[2] else 1), channel
            for address in rate_limited:
                assert sink.statuses_for(address) == [429, 202]
                assert deliveries[address]["attempts"] == 2
            for address in flaky:
                assert sink.statuses_for(address) == [503, 503, 202]

            # The owner's alert lists every permanent failure.
            (alert,) = sink.accepted_for(OWNER)
            text = alert.body["content"][0]["value"]
            for target in failed:
                assert target in text
            assert "6 of 505 recipients" in text

            # SendGrid's events for the accepted messages, signed as SendGrid signs them.
            events = []
            now = int(time.time())
            for i, message in enumerate(a for a in sink.accepted if a.recipient != OWNER):
                args = message.body["personalizations"][0].get("custom_args", {})
                base = {
                    "email": message.recipient,
                    "timestamp": now - 60,
                    "sg_message_id": f"{message.message_id}.filterdrecv-1.0",
                    **args,
                }
                events.append({**base, "event": "processed", "sg_event_id": f"p{i}"})
                if i == 0:
                    events.append(
                        {**base, "event": "bounce", "type": "bounce", "sg_event_id": f"b{i}", "timestamp": now}
                    )
                    continue
                events.append({**base, "event": "delivered", "sg_event_id": f"d{i}", "timestamp": now - 30})
                if i % 3 == 0:
                    events.append({**base, "event": "open", "sg_machine_open": i % 2 == 0, "sg_event_id": f"o{i}"})
            answers = collections.Counter()
            for start in range(0, len(events), 400):
                body = json.dumps(events[start : start + 400]).encode()
                response = post_signed(herald, signer, body)
                assert response.status_code == 200, response.text
                answers.update({k: v for k, v in response.json().items() if isinstance(v, int)})
            # A replayed batch (SendGrid retries) changes nothing.
            body = json.dumps(events[:400]).encode()
            replay = post_signed(herald, signer, body).json()
            after = {d["recipient"]: d for d in herald.deliveries(run_id)}
        finally:
            assert herald.stop() == 0

    assert answers["applied"] == len(events) and answers["unmatched"] == 0
    assert replay["applied"] == 0 and replay["duplicates"] == 400
    first = next(a.recipient for a in sink.accepted if a.recipient != OWNER)
    assert after[first]["status"] == "bounced"
    statuses = collections.Counter(d["status"] for r, d in after.items() if r in accepted)
    assert statuses == {"delivered": len(accepted) - 1, "bounced": 1}
    opened = [d for d in after.values() if d["events"].get("opens_human") or d["events"].get("opens_machine")]
    assert opened and all(d["events"]["delivered_at"] for d in opened)
    assert {d["status"] for r, d in after.items() if r in CHANNELS} == {"sent", "failed"}
