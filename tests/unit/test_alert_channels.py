"""Owner and ops alerts go to e-mail and/or Slack as settings.alert_channels says."""

from __future__ import annotations

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.records import Alert
from herald.services import alerts, runs
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.drive import drain


def failing_run(tmp_path, **settings):
    c = factories.container(tmp_path, **settings)
    apply_definitions(c, [factories.report()])
    c.mailer.script["b@example.com"] = [DeliveryError("SendGrid 400: invalid address", permanent=True)]
    runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    (alert,) = c.store.list_alerts()
    return c, alert


def test_email_only_by_default(tmp_path):
    c, alert = failing_run(tmp_path, owner_slack_channel="C-OWNER")
    assert alert.sent and "b@example.com" in c.mailer.sent["cfo@example.com"][0].text
    assert c.chat.posted == {}


def test_email_and_slack(tmp_path):
    c, alert = failing_run(tmp_path, alert_channels="email,slack", owner_slack_channel="C-OWNER")
    assert alert.sent and len(c.mailer.sent["cfo@example.com"]) == 1
    (post,) = c.chat.posted["C-OWNER"]
    assert "b@example.com" in post.text and "failed deliveries" in post.text


def test_slack_only_falls_back_to_email_without_a_channel(tmp_path):
    c, alert = failing_run(tmp_path, alert_channels="slack")
    assert alert.sent and len(c.mailer.sent["cfo@example.com"]) == 1


def test_one_channel_failing_still_alerts(tmp_path):
    c = factories.container(tmp_path, alert_channels="email,slack", owner_slack_channel="C-OWNER")
    apply_definitions(c, [factories.report()])
    c.chat.script["C-OWNER"] = [DeliveryError("channel_not_found", permanent=True)]
    c.mailer.script["b@example.com"] = [DeliveryError("SendGrid 400", permanent=True)]
    runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    (alert,) = c.store.list_alerts()
    assert alert.sent and len(c.mailer.sent["cfo@example.com"]) == 1


@pytest.mark.parametrize(
    ("channels", "ops_email", "slack_posts", "mails"),
    [
        ("slack", "", 1, 0),
        ("email", "ops@example.com", 0, 1),
        ("email,slack", "ops@example.com", 1, 1),
        ("email", "", 1, 0),  # e-mail chosen but no address: Slack, never dropped
    ],
)
def test_ops_alerts(tmp_path, channels, ops_email, slack_posts, mails):
    c = factories.container(tmp_path, alert_channels=channels, ops_email=ops_email)
    now = c.clock.now()
    alert = Alert(id="a1", kind="missed_slot", target="#reporting-ops", subject="late", body="x", created_at=now)
    assert alerts.ops_alert(c, alert)
    drain(c)
    assert len(c.chat.posted.get("#reporting-ops", [])) == slack_posts
    assert len(c.mailer.sent.get("ops@example.com", [])) == mails
    assert c.store.get_alert("a1").sent
