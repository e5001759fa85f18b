"""What a delivery's record says after each outcome of a send: the admin's delivery log
and the owner's alert read these fields (README "Delivery guarantees", "Admin"), so each
outcome is checked field by field against the rule, not against the code."""

from __future__ import annotations

from datetime import timedelta

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus
from herald.services import delivery as sending
from herald.services.scheduling import apply_definitions
from herald.services.tasks import SEND_DELIVERY
from tests import factories
from tests.unit.test_services_delivery import container, start

A = "a@example.com"  # the one recipient of test_services_delivery.container
CHANNEL = "C0123456789"


def test_a_sent_delivery_records_when_and_the_providers_id_and_holds_no_lease(tmp_path):
    c = container(tmp_path)
    _, (d,) = start(c)
    c.clock.advance(seconds=7)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("sent")
    sent = c.store.get_delivery(d.id)
    now = c.clock.now()
    assert sent.status == DeliveryStatus.SENT
    assert (sent.delivered_at, sent.updated_at, sent.lease_until) == (now, now, None)
    assert sent.provider_message_id == f"msg-{d.id}"  # what the provider answered (tests/fakes.py)
    assert (sent.last_error, sent.error_kind) == ("", "")
    assert sent.attempt_log[-1] == {"at": now.isoformat(), "result": "sent"}


def test_a_transient_failure_records_the_retry_and_its_reason(tmp_path):
    c = container(tmp_path)
    c.mailer.script[A] = [DeliveryError("SendGrid 503: busy", permanent=False)]
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("retrying")
    waiting = c.store.get_delivery(d.id)
    now = c.clock.now()
    assert waiting.status == DeliveryStatus.RETRYING
    assert waiting.next_attempt_at == now + timedelta(minutes=2)  # the first of 2, 8, 32 minutes
    assert (waiting.last_error, waiting.error_kind, waiting.lease_until) == ("SendGrid 503: busy", "transient", None)
    assert waiting.updated_at == now
    assert waiting.attempt_log[-1] == {"at": now.isoformat(), "result": "transient", "error": "SendGrid 503: busy"}


def test_a_permanent_failure_records_why_and_is_not_retried(tmp_path):
    c = container(tmp_path)
    c.mailer.script[A] = [DeliveryError("SendGrid 400: invalid address", permanent=True)]
    _, (d,) = start(c)
    c.clock.advance(seconds=3)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("failed")
    failed = c.store.get_delivery(d.id)
    now = c.clock.now()
    assert failed.status == DeliveryStatus.FAILED
    assert (failed.error_kind, failed.lease_until, failed.updated_at) == ("permanent", None, now)
    assert failed.last_error == "SendGrid 400: invalid address"
    assert failed.attempt_log[-1] == {"at": now.isoformat(), "result": "permanent", "error": failed.last_error}
    assert not [t for t in c.queue.pending if t.path == SEND_DELIVERY]  # no retry queued
    assert len(c.mailer.attempts[A]) == 1


def test_giving_up_after_the_last_retry_says_how_many_attempts(tmp_path):
    c = container(tmp_path, max_retries=1, retry_delays="60")
    c.mailer.script[A] = [DeliveryError("timeout", permanent=False)] * 2
    _, (d,) = start(c)
    assert sending.send_delivery(c, d.id).status == "retrying"
    c.clock.advance(seconds=60)
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("failed")
    failed = c.store.get_delivery(d.id)
    assert failed.status == DeliveryStatus.FAILED and failed.error_kind == "transient"
    assert failed.last_error == "gave up after 2 attempts: timeout"
    assert failed.attempt_log[-1]["result"] == "transient"
    assert failed.attempt_log[-1]["error"] == "gave up after 2 attempts: timeout"


def test_a_delivery_whose_report_is_gone_fails_permanently_and_says_so(tmp_path):
    c = container(tmp_path)
    run, (d,) = start(c)
    with c.store._write() as conn:  # the report row removed behind Herald's back
        conn.execute("DELETE FROM reports WHERE id=?", (run.report_id,))
    assert sending.send_delivery(c, d.id) == sending.SendOutcome("failed")
    failed = c.store.get_delivery(d.id)
    assert (failed.status, failed.error_kind) == (DeliveryStatus.FAILED, "permanent")
    assert failed.last_error == "the run or report no longer exists"
    assert failed.attempt_log[-1] == {  # logged as a permanent failure: no retry follows
        "at": c.clock.now().isoformat(),
        "result": "permanent",
        "error": "the run or report no longer exists",
    }
    assert A not in c.mailer.sent


def test_the_email_says_when_its_link_expires_and_how_to_unsubscribe(tmp_path):
    c = container(tmp_path)
    _, (d,) = start(c)
    sending.send_delivery(c, d.id)
    (message,) = c.mailer.sent[A]
    expires = d.created_at + timedelta(seconds=c.settings.link_ttl_seconds)  # 7 days (README)
    assert expires.strftime("%d %b %Y %H:%M UTC") in message.text
    assert message.headers["List-Unsubscribe"] == f"<{c.settings.public_url}/unsubscribe/{d.link_token}>"
    assert f"{c.settings.public_url}/l/{d.link_token}" in message.text


def test_a_slack_file_is_the_rendered_artifact_under_its_own_name(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(recipients={"slack": [CHANNEL]}, slack_file=True)])
    run, (d,) = start(c)
    sending.send_delivery(c, d.id)
    (message,) = c.chat.posted[CHANNEL]
    artifact = c.store.get_run(run.id).artifact_key
    assert message.file_name == artifact.split("/")[-1] and "/" not in message.file_name
    assert message.file_bytes == c.blobs.get(artifact)[0]
    assert f"{c.settings.public_url}/l/{d.link_token}" in message.text


def test_without_slack_file_only_the_link_is_posted(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(recipients={"slack": [CHANNEL]})])
    _, (d,) = start(c)
    sending.send_delivery(c, d.id)
    (message,) = c.chat.posted[CHANNEL]
    assert message.file_name is None and message.file_bytes is None
