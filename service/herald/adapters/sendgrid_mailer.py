"""The Mailer port on SendGrid's v3 mail send API: one request per recipient.

The body is the one the ``sendgrid`` library's ``Mail`` helper builds (``mail_body``),
and the auth headers come from ``SendGridAPIClient``; the request itself goes through a shared urllib3 pool
of keep-alive connections. ``python_http_client`` (the library's transport) opens a new
urllib opener and TCP (and TLS) connection for every call; SendGrid answers in ~50 ms,
so Herald's throughput is concurrency over that latency only if connections are
reused. urllib3 directly (requests' own engine) costs about a third of the CPU per
call that a ``requests.Session`` does, measured in bench/sendgrid_adapter.py.

Every failure becomes a ``DeliveryError`` (docs: https://www.twilio.com/docs/sendgrid/
api-reference/mail-send/mail-send#responses and .../how-to-use-the-sendgrid-v3-api/
rate-limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

import certifi
import urllib3
from pydantic_core import to_json
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import ValidateApiKey
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, ReadTimeoutError, SSLError

from herald.domain.errors import DeliveryError
from herald.ports.clock import Clock, SystemClock
from herald.ports.messages import EmailMessage, SendResult
from herald.settings import Settings

# SendGrid rejects more than 10 categories per message (spec: categories.maxItems).
MAX_CATEGORIES = 10
# The library's own check: refuses content that starts with a SendGrid API key (its regex
# is matched at the start only; kept as the library has it, not widened here).
_API_KEY_CHECK = ValidateApiKey()
_UNSUBSCRIBE_HEADERS = {"list-unsubscribe", "list-unsubscribe-post"}
# SendGrid refuses to let these be overridden (spec: headers description).
_RESERVED_HEADERS = {
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
}  # fmt: skip
_NOT_PASSED_ON = _RESERVED_HEADERS | _UNSUBSCRIBE_HEADERS


@dataclass(frozen=True)
class SendGridConfig:
    api_key: str
    from_email: str
    from_name: str = ""
    reply_to: str = ""
    host: str = "https://api.sendgrid.com"
    timeout_seconds: float = 10.0
    asm_group_id: int | None = None
    open_tracking: bool = True
    click_tracking: bool = False
    categories: tuple[str, ...] = ()
    pool_size: int = 32  # idle keep-alive connections kept; more open on demand

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridConfig:
        return cls(
            api_key=settings.sendgrid_api_key,
            from_email=settings.mail_from,
            from_name=settings.mail_from_name,
            reply_to=settings.reply_to,
            host=settings.sendgrid_host,
            timeout_seconds=settings.sendgrid_timeout_seconds,
            asm_group_id=settings.sendgrid_asm_group_id,
            open_tracking=settings.sendgrid_open_tracking,
            click_tracking=settings.sendgrid_click_tracking,
            categories=settings.sendgrid_categories,
            pool_size=max(32, settings.worker_threads),
        )


def mail_body(config: SendGridConfig, message: EmailMessage) -> dict[str, Any]:
    """The v3 mail/send body: one personalization with one ``to``; custom args ride on the
    personalization (SendGrid's spec types message-level ``custom_args`` as a string).

    The same body the ``sendgrid`` library's ``Mail`` helper builds (a test holds the two
    equal, tests/unit/test_sendgrid_body.py), without its dozen helper objects per
    message: they were a fifth of a send's CPU (issue 14). Its one check is kept: no
    SendGrid API key in the content."""
    parts = (("text/plain", message.text), ("text/html", message.html))
    contents = [{"type": kind, "value": value} for kind, value in parts if value]
    for entry in contents:
        _API_KEY_CHECK.validate_message_dict(entry["value"])
    personalization: dict[str, Any] = {"to": [_address(message.to)]}
    if message.custom_args:
        personalization["custom_args"] = {key: str(value) for key, value in message.custom_args.items()}
    sender = _address(config.from_email, config.from_name or None)
    body: dict[str, Any] = {
        "from": sender,
        "subject": message.subject,
        "personalizations": [personalization],
        "tracking_settings": {
            "click_tracking": {"enable": config.click_tracking, "enable_text": config.click_tracking},
            "open_tracking": {"enable": config.open_tracking},
        },
    }
    if contents:
        body["content"] = contents
    if headers := _headers(config, message.headers):
        body["headers"] = headers
    if categories := _categories(config.categories, message.categories):
        body["categories"] = categories
    if config.asm_group_id is not None:
        body["asm"] = {"group_id": config.asm_group_id}
    if config.reply_to:
        body["reply_to"] = _address(config.reply_to)
    return body


def _address(email: str, name: str | None = None) -> dict[str, str]:
    """An address as the library's ``Email`` takes it: without a name, ``email`` may be
    "Reports team <reports@example.com>" (RFC 5322, split by ``parseaddr``; a setting like
    HERALD_REPLY_TO is written that way), and what has no "@" is only a name."""
    if email and not name:
        name, email = parseaddr(email)
        if "@" not in email:
            name, email = email, ""
        return {**({"name": name} if name else {}), **({"email": email} if email else {})}
    return {**({"name": name} if name is not None else {}), "email": email}


def _categories(*groups: tuple[str, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for category in group:
            if category:
                seen.setdefault(category[:255], None)
    return list(seen)[:MAX_CATEGORIES]


def _headers(config: SendGridConfig, given: dict[str, str]) -> dict[str, str]:
    """With an ASM group SendGrid writes its own List-Unsubscribe; without one Herald's
    one-click URL is used (RFC 8058: List-Unsubscribe-Post only with an https URI)."""
    headers = {k: v for k, v in given.items() if k.lower() not in _NOT_PASSED_ON}
    if config.asm_group_id is None:
        unsubscribe = next((v for k, v in given.items() if k.lower() == "list-unsubscribe"), "")
        if unsubscribe:
            headers["List-Unsubscribe"] = unsubscribe
            if "<https://" in unsubscribe:
                headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


class SendGridMailer:
    """Thread-safe: all worker threads share one urllib3 pool of keep-alive connections
    (urllib3 pools are documented thread-safe); a connection is opened only when every
    pooled one is busy, and at most ``pool_size`` idle ones are kept."""

    def __init__(
        self,
        config: SendGridConfig,
        *,
        clock: Clock | None = None,
        pool: urllib3.HTTPConnectionPool | None = None,
    ) -> None:
        if not config.api_key:
            raise ValueError("SendGridMailer needs an API key (an empty key means the outbox)")
        self.config = config
        self.clock = clock or SystemClock()
        api = SendGridAPIClient(api_key=config.api_key, host=config.host.rstrip("/"))
        self.url = f"{api.host}/v3/mail/send"
        self.headers = {**api.client.request_headers, "Content-Type": "application/json"}
        self.timeout = urllib3.Timeout(connect=config.timeout_seconds, read=config.timeout_seconds)
        # One host, so one connection pool: a PoolManager would parse the URL and look the
        # pool up again on every send (~5% of a worker's GIL time under py-spy).
        tls = {"ca_certs": certifi.where()} if self.url.startswith("https:") else {}
        self._pool = pool or urllib3.connection_from_url(self.url, maxsize=config.pool_size, block=False, **tls)
        self._path = urllib3.util.parse_url(self.url).request_uri  # a connection pool takes the path

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None) -> SendGridMailer:
        return cls(SendGridConfig.from_settings(settings), clock=clock)

    def send(self, message: EmailMessage) -> SendResult:
        try:
            body = to_json(mail_body(self.config, message))  # pydantic's own serializer: a third of json's time
        except Exception as exc:  # the library's validator (an API key in the content)
            raise DeliveryError(f"SendGrid message could not be built: {exc}", permanent=True) from exc
        try:
            response = self._pool.request(
                "POST", self._path, body=body, headers=self.headers, timeout=self.timeout, retries=False, redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise classify_exception(exc) from exc
        if 200 <= response.status < 300:
            # SendGrid's X-Message-Id; Prism (the spec) has none, so it may be empty there.
            return SendResult(message_id=response.headers.get("X-Message-Id", ""))
        text = response.data.decode("utf-8", "replace")
        raise classify_response(response.status, response.headers, text, self.clock.now().timestamp())

    def close(self) -> None:
        self._pool.close()


def classify_response(status: int, headers: Any, text: str, now: float) -> DeliveryError:
    """Non-2xx answers. ``now`` is epoch seconds, to turn X-RateLimit-Reset into a wait."""
    detail = f"SendGrid {status}: {_error_text(text)}"
    if status == 429:
        # Rate limited until X-RateLimit-Reset (epoch seconds); see the rate-limits doc.
        return DeliveryError(detail, permanent=False, retry_after=_reset_wait(headers, now))
    if status >= 500 or status == 408:
        # SendGrid's own trouble: the same request may succeed later.
        return DeliveryError(detail, permanent=False)
    # 400 invalid body, 401 bad key, 403 key lacks mail.send or sender not verified,
    # 413 body over 30 MB: the same request will always fail. Other 4xx likewise.
    return DeliveryError(detail, permanent=True)


def classify_exception(exc: urllib3.exceptions.HTTPError) -> DeliveryError:
    """urllib3 with ``retries=False`` raises the first error as it is."""
    if isinstance(exc, ConnectTimeoutError):  # includes NewConnectionError: refused, DNS
        return DeliveryError(f"SendGrid unreachable: {exc}", permanent=False)
    if isinstance(exc, SSLError):
        # A failed TLS handshake: nothing reached SendGrid.
        return DeliveryError(f"SendGrid TLS failure: {exc}", permanent=False)
    if isinstance(exc, ReadTimeoutError):
        # The request left: SendGrid may have accepted it. Reconcile before resending.
        return DeliveryError(f"SendGrid read timeout: {exc}", permanent=False, unknown=True)
    if isinstance(exc, LocationParseError):
        return DeliveryError(f"SendGrid host setting is invalid: {exc}", permanent=True)
    # ProtocolError (reset, closed without an answer) and broken responses: it may have landed.
    return DeliveryError(f"SendGrid connection lost: {exc}", permanent=False, unknown=True)


def _reset_wait(headers: Any, now: float) -> float | None:
    for name, parse in (("X-RateLimit-Reset", lambda v: float(v) - now), ("Retry-After", float)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, parse(value))
        except ValueError:
            continue
    return None


def _error_text(text: str) -> str:
    try:
        errors = json.loads(text).get("errors") or []
        messages = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        messages = text
    return (messages or "no detail")[:300]
