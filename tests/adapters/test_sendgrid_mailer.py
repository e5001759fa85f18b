"""SendGridMailer against a real local HTTP server (tests/support/sendgrid_sink.py)."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from herald.adapters.sendgrid_mailer import SendGridConfig, SendGridMailer
from herald.domain.errors import DeliveryError
from herald.ports.clock import FakeClock
from herald.ports.messages import EmailMessage
from herald.settings import load_settings
from tests.support.fixtures import free_port
from tests.support.sendgrid_sink import SendGridSink

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
UNSUBSCRIBE = "<https://herald.example.com/u/tok123>, <mailto:unsubscribe@herald.example.com?subject=tok123>"


def config(url: str, **overrides: object) -> SendGridConfig:
    base = SendGridConfig(
        api_key="SG.test", from_email="reports@herald.example.com", from_name="Herald Reports",
        reply_to="ops@herald.example.com", host=url, timeout_seconds=2.0, categories=("herald",),
    )  # fmt: skip
    return replace(base, **overrides)  # type: ignore[arg-type]


def message(to: str = "ana@example.com", **overrides: object) -> EmailMessage:
    base = EmailMessage(
        to=to, subject="Board pack — March 2026", text="Summary\nhttps://herald/l/x", html="<p>Summary</p>",
        custom_args={"delivery_id": "d-1", "run_id": "r-1", "report_id": "board"},
        categories=("board-pack",), headers={"List-Unsubscribe": UNSUBSCRIBE}, idempotency_key="d-1",
    )  # fmt: skip
    return replace(base, **overrides)  # type: ignore[arg-type]


def failure(sink: SendGridSink, msg: EmailMessage | None = None, **overrides: object) -> DeliveryError:
    mailer = SendGridMailer(config(sink.url, **overrides), clock=FakeClock(NOW))
    with pytest.raises(DeliveryError) as caught:
        mailer.send(msg or message())
    return caught.value


def test_accepted_send_returns_the_x_message_id(sendgrid_sink: SendGridSink) -> None:
    result = SendGridMailer(config(sendgrid_sink.url)).send(message())

    [accepted] = sendgrid_sink.accepted
    assert result.message_id == accepted.message_id != ""
    assert accepted.headers["Authorization"] == "Bearer SG.test"


def test_body_is_one_personalization_one_recipient_with_custom_args_on_it(sendgrid_sink: SendGridSink) -> None:
    SendGridMailer(config(sendgrid_sink.url)).send(message())

    body = sendgrid_sink.accepted[0].body
    [personalization] = body["personalizations"]
    assert personalization["to"] == [{"email": "ana@example.com"}]
    assert personalization["custom_args"] == {"delivery_id": "d-1", "run_id": "r-1", "report_id": "board"}
    assert "custom_args" not in body and "attachments" not in body
    assert set(personalization) == {"to", "custom_args"}  # no cc / bcc
    assert body["from"] == {"email": "reports@herald.example.com", "name": "Herald Reports"}
    assert body["reply_to"] == {"email": "ops@herald.example.com"}
    assert body["subject"] == "Board pack — March 2026"
    assert body["content"] == [
        {"type": "text/plain", "value": "Summary\nhttps://herald/l/x"},
        {"type": "text/html", "value": "<p>Summary</p>"},
    ]
    assert body["categories"] == ["herald", "board-pack"]


def test_without_asm_group_the_one_click_unsubscribe_headers_are_sent(sendgrid_sink: SendGridSink) -> None:
    SendGridMailer(config(sendgrid_sink.url)).send(message())

    body = sendgrid_sink.accepted[0].body
    assert body["headers"] == {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert "asm" not in body


def test_mailto_only_unsubscribe_is_not_one_click(sendgrid_sink: SendGridSink) -> None:
    mailto = "<mailto:unsubscribe@herald.example.com>"
    SendGridMailer(config(sendgrid_sink.url)).send(message(headers={"List-Unsubscribe": mailto}))

    assert sendgrid_sink.accepted[0].body["headers"] == {"List-Unsubscribe": mailto}


def test_asm_group_replaces_list_unsubscribe_headers(sendgrid_sink: SendGridSink) -> None:
    SendGridMailer(config(sendgrid_sink.url, asm_group_id=4242)).send(
        message(headers={**message().headers, "X-Ref": "1"})
    )

    body = sendgrid_sink.accepted[0].body
    assert body["asm"] == {"group_id": 4242}
    assert body["headers"] == {"X-Ref": "1"}


@pytest.mark.parametrize(("opens", "clicks"), [(True, False), (False, True), (False, False), (True, True)])
def test_tracking_settings_follow_the_configuration(sendgrid_sink: SendGridSink, opens: bool, clicks: bool) -> None:
    SendGridMailer(config(sendgrid_sink.url, open_tracking=opens, click_tracking=clicks)).send(message())

    assert sendgrid_sink.accepted[0].body["tracking_settings"] == {
        "open_tracking": {"enable": opens},
        "click_tracking": {"enable": clicks, "enable_text": clicks},
    }


def test_categories_are_deduplicated_and_capped_at_ten(sendgrid_sink: SendGridSink) -> None:
    many = tuple(f"c{i}" for i in range(15))
    SendGridMailer(config(sendgrid_sink.url)).send(message(categories=("herald", *many)))

    assert sendgrid_sink.accepted[0].body["categories"] == ["herald", *many[:9]]


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (403, True), (404, True), (413, True),
     (500, False), (502, False), (503, False), (504, False)],
)  # fmt: skip
def test_status_classification(sendgrid_sink: SendGridSink, status: int, permanent: bool) -> None:
    sendgrid_sink.reject("ana@example.com", status)

    error = failure(sendgrid_sink)

    assert (error.permanent, error.unknown, error.retry_after) == (permanent, False, None)
    assert str(status) in error.message


def test_rate_limit_is_transient_until_the_reset_time(sendgrid_sink: SendGridSink) -> None:
    sendgrid_sink.rate_limit("ana@example.com", times=1, reset_at=NOW.timestamp() + 42)

    error = failure(sendgrid_sink)

    assert (error.permanent, error.unknown, error.retry_after) == (False, False, 42.0)


def test_rate_limit_with_a_past_reset_waits_nothing(sendgrid_sink: SendGridSink) -> None:
    sendgrid_sink.rate_limit("ana@example.com", times=1, reset_at=NOW.timestamp() - 5)

    assert failure(sendgrid_sink).retry_after == 0.0


def test_a_transient_failure_then_success_sends_once(sendgrid_sink: SendGridSink) -> None:
    sendgrid_sink.server_error("ana@example.com", times=1, status=503)
    mailer = SendGridMailer(config(sendgrid_sink.url))

    with pytest.raises(DeliveryError):
        mailer.send(message())
    mailer.send(message())

    assert sendgrid_sink.statuses_for("ana@example.com") == [503, 202]
    assert len(sendgrid_sink.accepted_for("ana@example.com")) == 1


def test_wrong_api_key_is_permanent() -> None:
    with SendGridSink(api_key="SG.right") as sink:
        error = failure(sink)
    assert error.permanent and "401" in error.message


def test_a_slow_answer_is_an_unknown_outcome(sendgrid_sink: SendGridSink) -> None:
    sendgrid_sink.slow("ana@example.com", delay_ms=3000)

    error = failure(sendgrid_sink, timeout_seconds=0.2)

    assert (error.permanent, error.unknown) == (False, True)
    assert "timeout" in error.message


def test_a_connection_closed_without_answer_is_an_unknown_outcome(sendgrid_sink: SendGridSink) -> None:
    sendgrid_sink.hang_up("ana@example.com")

    error = failure(sendgrid_sink)

    assert (error.permanent, error.unknown) == (False, True)


def test_connection_refused_is_transient_and_not_sent() -> None:
    mailer = SendGridMailer(config(f"http://127.0.0.1:{free_port()}"))

    with pytest.raises(DeliveryError) as caught:
        mailer.send(message())

    assert (caught.value.permanent, caught.value.unknown) == (False, False)


def test_connect_timeout_is_transient_and_not_sent() -> None:
    # A listener that never accepts, with its backlog full: the next SYN is dropped.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = _fill_backlog(port)
        try:
            mailer = SendGridMailer(config(f"http://127.0.0.1:{port}", timeout_seconds=0.3))
            with pytest.raises(DeliveryError) as caught:
                mailer.send(message())
        finally:
            for filler in fillers:
                filler.close()

    assert (caught.value.permanent, caught.value.unknown) == (False, False)
    assert "connect timeout" in caught.value.message


def _fill_backlog(port: int) -> list[socket.socket]:
    fillers: list[socket.socket] = []
    for _ in range(8):  # bounded: Linux queues backlog + 1 connections
        try:
            fillers.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))
        except TimeoutError:
            return fillers
    raise AssertionError("the listener's backlog never filled up")


def test_a_message_the_helper_refuses_is_permanent_and_never_sent(sendgrid_sink: SendGridSink) -> None:
    leaked = message(text="SG.abcdefghijklmnop.qrstuvwxyz0123456789")  # the helper refuses API keys

    error = failure(sendgrid_sink, leaked)

    assert error.permanent
    assert sendgrid_sink.seen == []


def test_concurrent_sends_from_many_threads_do_not_mix(sendgrid_sink: SendGridSink) -> None:
    mailer = SendGridMailer(config(sendgrid_sink.url))
    recipients = [f"user{i}@example.com" for i in range(200)]

    def send(to: str) -> str:
        return mailer.send(message(to, custom_args={"delivery_id": to})).message_id

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(send, recipients))
    mailer.close()

    assert len(set(ids)) == 200
    assert sendgrid_sink.counts["connections"] <= 16  # kept alive, one per concurrent sender at most
    by_recipient = {
        a.recipient: a.body["personalizations"][0]["custom_args"]["delivery_id"] for a in sendgrid_sink.accepted
    }
    assert by_recipient == {to: to for to in recipients}


def test_short_lived_threads_reuse_one_kept_alive_connection(sendgrid_sink: SendGridSink) -> None:
    mailer = SendGridMailer(config(sendgrid_sink.url))

    for i in range(20):
        thread = threading.Thread(target=mailer.send, args=(message(f"user{i}@example.com"),))
        thread.start()
        thread.join(timeout=10)

    assert (sendgrid_sink.counts["accepted"], sendgrid_sink.counts["connections"]) == (20, 1)


def test_an_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="API key"):
        SendGridMailer(config("http://127.0.0.1:1", api_key=""))


def test_configuration_comes_from_settings() -> None:
    settings = load_settings(
        sendgrid_api_key="SG.x", sendgrid_host="http://127.0.0.1:9", sendgrid_asm_group_id=7,
        sendgrid_categories="herald, board", sendgrid_timeout_seconds=3, mail_from="a@b.c", reply_to="r@b.c",
    )  # fmt: skip

    mailer = SendGridMailer.from_settings(settings)

    assert mailer.url == "http://127.0.0.1:9/v3/mail/send"
    assert (mailer.config.asm_group_id, mailer.config.categories) == (7, ("herald", "board"))
    assert (mailer.config.from_email, mailer.config.reply_to, mailer.config.timeout_seconds) == ("a@b.c", "r@b.c", 3.0)
