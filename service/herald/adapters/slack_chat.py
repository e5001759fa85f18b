"""The Chat port on Slack: incoming webhooks and the Web API (``slack_sdk``).

A target that is a URL is an incoming webhook; anything else is a channel id posted
with ``chat.postMessage``, or with ``files_upload_v2`` when the message carries the
file itself. slack_sdk's retry handlers are switched off: a 429 or a dropped
connection must reach Herald's retry policy (2, 8, 32 minutes), not be retried here,
and a retried post could appear twice in the channel.
"""

from __future__ import annotations

import http.client
import urllib.error
import uuid
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient, WebhookClient
from slack_sdk.errors import SlackApiError, SlackClientError

from herald.adapters import net_guard
from herald.domain.errors import DeliveryError
from herald.ports.messages import ChatMessage, SendResult
from herald.settings import Settings

# chat.postMessage / files.completeUploadExternal errors that no retry can fix
# (https://docs.slack.dev/reference/methods/chat.postMessage#errors,
#  https://docs.slack.dev/reference/methods/files.completeUploadExternal#errors).
PERMANENT_API_ERRORS = frozenset(
    {
        "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
        "restricted_action", "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel", "too_many_attachments", "invalid_blocks",
        "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
        "no_permission", "missing_scope", "not_allowed_token_type", "org_login_required",
        "ekm_access_denied", "team_access_not_granted", "invalid_arguments", "invalid_arg_name",
        "invalid_charset", "invalid_form_data", "invalid_post_type", "missing_post_type",
        "file_not_found", "file_uploads_disabled", "file_upload_size_restricted", "access_denied",
    }
)  # fmt: skip
# Documented as transient: "try again later" (service_unavailable, request_timeout) ...
TRANSIENT_API_ERRORS = frozenset({"ratelimited", "service_unavailable", "request_timeout", "team_added_to_org"})
# ... and transient but "some aspect of the operation may have succeeded": unknown outcome.
UNKNOWN_API_ERRORS = frozenset({"fatal_error", "internal_error"})
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class SlackChat:
    def __init__(
        self,
        *,
        token: str = "",
        api_url: str = "https://slack.com/api/",
        timeout_seconds: float = 10.0,
        allow_private: bool = False,
    ):
        self.allow_private = allow_private  # webhook URLs come from definitions: private targets need the setting
        self.timeout = timeout_seconds
        base_url = api_url if api_url.endswith("/") else api_url + "/"
        # retry_handlers=[]: the default handler retries connection errors, hiding them.
        self.client = WebClient(token=token or None, base_url=base_url, timeout=timeout_seconds, retry_handlers=[])  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackChat:
        return cls(
            token=settings.slack_bot_token,
            api_url=settings.slack_api_url,
            timeout_seconds=settings.slack_timeout_seconds,
            allow_private=settings.allow_private_targets,
        )

    def post(self, message: ChatMessage) -> SendResult:
        try:
            if is_webhook(message.target):
                return self._webhook(message)
            if message.file_bytes is not None:
                return self._upload(message)
            response = self.client.chat_postMessage(channel=message.target, text=message.text)
            return SendResult(message_id=str(response["ts"]))
        except SlackApiError as exc:
            raise classify_api_error(exc) from exc
        except (SlackClientError, OSError, http.client.HTTPException) as exc:
            raise classify_transport_error(exc) from exc

    def _upload(self, message: ChatMessage) -> SendResult:
        name = message.file_name or "report"
        response = self.client.files_upload_v2(
            channel=message.target, content=message.file_bytes, filename=name, title=name,
            initial_comment=message.text or None,
        )  # fmt: skip
        files: list[dict[str, Any]] = response.get("files") or []
        # files.completeUploadExternal returns no message ts; the file id identifies the share.
        return SendResult(message_id=str(files[0]["id"]) if files else f"slack-file-{uuid.uuid4().hex}")

    def _webhook(self, message: ChatMessage) -> SendResult:
        url = urlsplit(message.target)
        if url.scheme != "https" and url.hostname not in _LOOPBACK:
            raise DeliveryError("Slack webhook URLs must be https", permanent=True)
        try:  # slack_sdk uses urllib, past requests' connect-time guard: check where the name resolves now
            net_guard.check_resolved(message.target, self.allow_private, timeout=self.timeout)
        except net_guard.TargetRefused as exc:
            raise DeliveryError(
                f"Slack webhook not allowed: {exc}", permanent="cannot resolve" not in str(exc)
            ) from None
        client = WebhookClient(url=message.target, timeout=self.timeout, retry_handlers=[])  # type: ignore[arg-type]
        response = client.send(text=message.text)
        if response.status_code == 200:
            # Incoming webhooks return only "ok": no ts to record, so Herald names the post.
            return SendResult(message_id=f"slack-webhook-{message.idempotency_key or uuid.uuid4().hex}")
        raise classify_webhook(response.status_code, response.body, response.headers)


def is_webhook(target: str) -> bool:
    return target.startswith(("https://", "http://"))


def classify_api_error(exc: SlackApiError) -> DeliveryError:
    status = exc.response.status_code
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    error = str(data.get("error", "")) or f"HTTP {status}"
    detail = f"Slack API {status}: {error}"
    if status == 429 or error == "ratelimited":
        # Rate limited: wait Retry-After seconds (https://docs.slack.dev/apis/web-api/rate-limits).
        return DeliveryError(detail, permanent=False, retry_after=_retry_after(exc.response.headers))
    if error in UNKNOWN_API_ERRORS:
        return DeliveryError(detail, permanent=False, unknown=True)
    if status >= 500 or error in TRANSIENT_API_ERRORS:
        return DeliveryError(detail, permanent=False)
    # Documented request/auth/channel errors, and any other ok:false: the same request fails again.
    return DeliveryError(detail, permanent=True)


def classify_webhook(status: int, body: str, headers: Any) -> DeliveryError:
    # https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks#handling-errors
    detail = f"Slack webhook {status}: {(body or '').strip()[:200] or 'no detail'}"
    if status == 429:
        return DeliveryError(detail, permanent=False, retry_after=_retry_after(headers))
    if status >= 500:
        # rollup_error and other server trouble: Slack asks to retry later.
        return DeliveryError(detail, permanent=False)
    # 400 invalid_payload / user_not_found, 403 action_prohibited / invalid_token,
    # 404 channel_not_found / no_service, 410 channel_is_archived: "unlikely to ever work again".
    return DeliveryError(detail, permanent=True)


def classify_transport_error(exc: BaseException) -> DeliveryError:
    if isinstance(exc, urllib.error.HTTPError):
        # Only the files_upload_v2 upload step lets an HTTP error through.
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
        return DeliveryError(f"Slack file upload {exc.code}", permanent=permanent)
    if isinstance(exc, urllib.error.URLError):
        # urllib wraps failures of connect + send (refused, DNS, connect timeout): not sent.
        return DeliveryError(f"Slack unreachable: {exc.reason}", permanent=False)
    if isinstance(exc, SlackClientError):
        # e.g. the upload URL answered non-200: nothing was shared yet.
        return DeliveryError(f"Slack client error: {exc}", permanent=False)
    # Timeout or reset while waiting for the answer: the post may have landed.
    return DeliveryError(f"Slack response lost: {exc!r}", permanent=False, unknown=True)


def _retry_after(headers: Any) -> float | None:
    for name in ("Retry-After", "retry-after"):
        value = headers.get(name) if headers else None
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None
