"""SlackChat against a local Slack that follows Slack's documented answers
(tests/support/slack_fake.py): real HTTP, no mocks."""

from __future__ import annotations

import pytest

from herald.adapters.slack_chat import SlackChat
from herald.domain.errors import DeliveryError
from herald.ports.messages import ChatMessage
from herald.settings import load_settings
from tests.support.fixtures import free_port
from tests.support.slack_fake import SlackBehaviour, SlackFake

CHANNEL = "C0123ABCD"


def chat(fake: SlackFake, timeout: float = 2.0) -> SlackChat:
    # the fake is on loopback: private targets allowed, as a test lab would
    return SlackChat(token="xoxb-test", api_url=fake.api_url, timeout_seconds=timeout, allow_private=True)


def failure(sender: SlackChat, message: ChatMessage) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        sender.post(message)
    return caught.value


def kind(error: DeliveryError) -> tuple[bool, bool, float | None]:
    return error.permanent, error.unknown, error.retry_after


def test_channel_post_returns_the_message_ts(slack_fake: SlackFake) -> None:
    result = chat(slack_fake).post(ChatMessage(target=CHANNEL, text="Board pack is ready: https://herald/l/x"))

    [received] = slack_fake.received_for(CHANNEL)
    assert received.kind == "chat" and received.text == "Board pack is ready: https://herald/l/x"
    assert result.message_id == received.ref != ""
    assert slack_fake.requests == [("chat.postMessage", CHANNEL, 200)]


def test_webhook_post_gets_a_synthesized_id(slack_fake: SlackFake) -> None:
    result = chat(slack_fake).post(ChatMessage(target=slack_fake.webhook_url("ops"), text="hi", idempotency_key="d-9"))

    assert [r.text for r in slack_fake.received_for("ops")] == ["hi"]
    assert result.message_id == "slack-webhook-d-9"


def test_file_upload_goes_through_the_three_v2_steps(slack_fake: SlackFake) -> None:
    message = ChatMessage(target=CHANNEL, text="March pack", file_name="board.pdf", file_bytes=b"%PDF-1.7 ...")

    result = chat(slack_fake).post(message)

    [shared] = slack_fake.received_for(CHANNEL)
    assert (shared.kind, shared.text, shared.data) == ("file", "March pack", b"%PDF-1.7 ...")
    assert result.message_id == shared.ref != ""
    assert [what for what, _, _ in slack_fake.requests] == [
        "files.getUploadURLExternal", "upload", "files.completeUploadExternal",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "error",
    ["channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "token_revoked", "missing_scope",
     "account_inactive", "msg_too_long", "restricted_action", "not_allowed_token_type", "some_future_error"],
)  # fmt: skip
def test_documented_api_errors_are_permanent(slack_fake: SlackFake, error: str) -> None:
    slack_fake.api_error(CHANNEL, error)

    failed = failure(chat(slack_fake), ChatMessage(target=CHANNEL, text="x"))

    assert kind(failed) == (True, False, None)
    assert error in failed.message


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (SlackBehaviour(429, "ratelimited", retry_after=30), (False, False, 30.0)),
        (SlackBehaviour(200, "service_unavailable"), (False, False, None)),
        (SlackBehaviour(200, "request_timeout"), (False, False, None)),
        (SlackBehaviour(200, "internal_error"), (False, True, None)),
        (SlackBehaviour(200, "fatal_error"), (False, True, None)),
        (SlackBehaviour(500, "oops"), (False, False, None)),
        (SlackBehaviour(503, "unavailable"), (False, False, None)),
    ],
)
def test_transient_api_answers(slack_fake: SlackFake, behaviour: SlackBehaviour, expected: tuple[object, ...]) -> None:
    slack_fake.script(CHANNEL, behaviour)

    assert kind(failure(chat(slack_fake), ChatMessage(target=CHANNEL, text="x"))) == expected


def test_a_429_is_not_retried_inside_slack_sdk(slack_fake: SlackFake) -> None:
    slack_fake.rate_limit(CHANNEL, times=1, retry_after=1)
    sender = chat(slack_fake)

    assert failure(sender, ChatMessage(target=CHANNEL, text="x")).retry_after == 1.0
    sender.post(ChatMessage(target=CHANNEL, text="x"))

    assert [status for _, _, status in slack_fake.requests] == [429, 200]


def test_a_token_slack_does_not_know_is_permanent() -> None:
    with SlackFake(token="xoxb-right") as fake:
        failed = failure(chat(fake), ChatMessage(target=CHANNEL, text="x"))
    assert kind(failed) == (True, False, None) and "invalid_auth" in failed.message


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, "invalid_payload", (True, False, None)),
        (400, "user_not_found", (True, False, None)),
        (403, "action_prohibited", (True, False, None)),
        (403, "invalid_token", (True, False, None)),
        (404, "channel_not_found", (True, False, None)),
        (404, "no_service", (True, False, None)),
        (410, "channel_is_archived", (True, False, None)),
        (500, "rollup_error", (False, False, None)),
        (503, "service_unavailable", (False, False, None)),
    ],
)
def test_webhook_statuses(slack_fake: SlackFake, status: int, body: str, expected: tuple[object, ...]) -> None:
    slack_fake.http_error("ops", status, body)

    failed = failure(chat(slack_fake), ChatMessage(target=slack_fake.webhook_url("ops"), text="x"))

    assert kind(failed) == expected
    assert body in failed.message


def test_webhook_rate_limit_carries_retry_after(slack_fake: SlackFake) -> None:
    slack_fake.rate_limit("ops", retry_after=12)

    failed = failure(chat(slack_fake), ChatMessage(target=slack_fake.webhook_url("ops"), text="x"))

    assert kind(failed) == (False, False, 12.0)
    assert len(slack_fake.requests) == 1


def test_plain_http_webhooks_are_refused_unless_local() -> None:
    sender = SlackChat(token="", api_url="http://127.0.0.1:1/api/", allow_private=True)

    failed = failure(sender, ChatMessage(target="http://hooks.example.com/services/T/B/x", text="x"))

    assert kind(failed) == (True, False, None)


@pytest.mark.parametrize("target", ["channel", "webhook"])
def test_a_slow_answer_is_an_unknown_outcome(slack_fake: SlackFake, target: str) -> None:
    key, url = (CHANNEL, CHANNEL) if target == "channel" else ("ops", slack_fake.webhook_url("ops"))
    slack_fake.slow(key, delay_ms=3000)

    assert kind(failure(chat(slack_fake, timeout=0.2), ChatMessage(target=url, text="x"))) == (False, True, None)


def test_a_connection_closed_without_answer_is_an_unknown_outcome(slack_fake: SlackFake) -> None:
    slack_fake.hang_up(CHANNEL)

    assert kind(failure(chat(slack_fake), ChatMessage(target=CHANNEL, text="x"))) == (False, True, None)


@pytest.mark.parametrize("target", ["channel", "webhook"])
def test_connection_refused_is_transient_and_not_sent(target: str) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    sender = SlackChat(token="xoxb-test", api_url=f"{base}/api/", timeout_seconds=1, allow_private=True)
    url = CHANNEL if target == "channel" else f"{base}/services/T/B/x"

    assert kind(failure(sender, ChatMessage(target=url, text="x"))) == (False, False, None)


def test_a_failed_upload_step_is_transient(slack_fake: SlackFake) -> None:
    slack_fake.http_error("upload", 500)
    message = ChatMessage(target=CHANNEL, text="x", file_name="r.pdf", file_bytes=b"x")

    assert kind(failure(chat(slack_fake), message)) == (False, False, None)
    assert slack_fake.received == []


def test_file_share_to_a_missing_channel_is_permanent(slack_fake: SlackFake) -> None:
    slack_fake.api_error(CHANNEL, "channel_not_found")
    message = ChatMessage(target=CHANNEL, text="x", file_name="r.pdf", file_bytes=b"x")

    assert kind(failure(chat(slack_fake), message)) == (True, False, None)


def test_configuration_comes_from_settings() -> None:
    settings = load_settings(slack_bot_token="xoxb-s", slack_api_url="http://127.0.0.1:9/api", slack_timeout_seconds=4)

    sender = SlackChat.from_settings(settings)

    assert (sender.client.base_url, sender.client.token, sender.timeout) == ("http://127.0.0.1:9/api/", "xoxb-s", 4.0)


def test_a_webhook_on_a_private_address_is_refused_without_the_setting() -> None:
    with SlackFake() as fake:
        refused = SlackChat(token="", api_url=fake.api_url)
        with pytest.raises(DeliveryError) as error:
            refused.post(ChatMessage(target=fake.webhook_url("T1/B1/x"), text="hello"))
    assert error.value.permanent and "not allowed" in error.value.message
    assert fake.received_for("T1/B1/x") == []
