"""Outbound messages (mail and chat) and the ports that send them.

Senders raise ``DeliveryError`` (permanent or transient) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class EmailMessage:
    to: str
    subject: str
    text: str
    html: str
    custom_args: dict[str, str] = field(default_factory=dict)  # ids only, no personal data
    categories: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""  # the delivery id; outbox files are keyed by it


@dataclass(frozen=True)
class ChatMessage:
    target: str  # channel id or incoming-webhook URL
    text: str
    idempotency_key: str = ""
    file_name: str | None = None
    file_bytes: bytes | None = None


@dataclass(frozen=True)
class SendResult:
    message_id: str


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> SendResult: ...


class Chat(Protocol):
    def post(self, message: ChatMessage) -> SendResult: ...
