"""Mail and chat written to files under the outbox folder, for laptops and tests.

Files are named by the delivery id (the idempotency key), so a send repeated after a
crash rewrites the same file instead of delivering a second message.
"""

from __future__ import annotations

import email.message
import email.policy
import hashlib
import json
import os
from pathlib import Path

from herald.ports.messages import ChatMessage, EmailMessage, SendResult


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _file_key(key: str, fallback: str) -> str:
    return key or hashlib.sha256(fallback.encode()).hexdigest()[:24]


class OutboxMailer:
    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = Path(directory) / "mail"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sender = sender

    def send(self, message: EmailMessage) -> SendResult:
        key = _file_key(message.idempotency_key, message.to + message.subject + message.text)
        mail = email.message.EmailMessage(policy=email.policy.SMTP)
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = f"<{key}@herald.outbox>"
        for name, value in message.headers.items():
            mail[name] = value
        for name, value in message.custom_args.items():
            mail[f"X-Herald-{name.replace('_', '-').title()}"] = value
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        _atomic_write(self.directory / f"{key}.eml", bytes(mail))
        return SendResult(message_id=f"outbox-{key}")


class OutboxChat:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory) / "chat"
        self.directory.mkdir(parents=True, exist_ok=True)

    def post(self, message: ChatMessage) -> SendResult:
        key = _file_key(message.idempotency_key, message.target + message.text)
        body = {"target": message.target, "text": message.text, "file_name": message.file_name}
        if message.file_bytes is not None:
            (self.directory / f"{key}-{message.file_name or 'report'}").write_bytes(message.file_bytes)
        _atomic_write(self.directory / f"{key}.json", json.dumps(body, indent=2).encode())
        return SendResult(message_id=f"outbox-{key}")


class NullMailer:
    """Accepts everything and keeps nothing: for benchmarks of Herald's own overhead."""

    def send(self, message: EmailMessage) -> SendResult:
        return SendResult(message_id=f"null-{message.idempotency_key}")
