"""Outbox adapters: one file per delivery, so a repeated send never makes a second message."""

import email
import json

from herald.adapters.embedded.outbox import OutboxChat, OutboxMailer
from herald.ports.messages import ChatMessage, EmailMessage


def message(**kw):
    base = dict(
        to="a@example.com",
        subject="Board pack — 2026-10",
        text="Summary\nhttp://x/l/t",
        html="<p>Summary</p>",
        custom_args={"delivery_id": "d1"},
        idempotency_key="d1",
    )
    base.update(kw)
    return EmailMessage(**base)


def test_mail_is_a_readable_eml_keyed_by_delivery(tmp_path):
    mailer = OutboxMailer(tmp_path, "reports@herald.local")
    first = mailer.send(message())
    again = mailer.send(message())
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1 and first == again
    parsed = email.message_from_bytes(files[0].read_bytes())
    assert parsed["To"] == "a@example.com" and parsed["X-Herald-Delivery-Id"] == "d1"
    assert parsed.is_multipart() and not any(p.get_filename() for p in parsed.walk())  # never an attachment


def test_chat_is_a_json_file(tmp_path):
    chat = OutboxChat(tmp_path)
    chat.post(ChatMessage(target="C123", text="hello", idempotency_key="d2"))
    (file,) = (tmp_path / "chat").glob("*.json")
    assert json.loads(file.read_text())["target"] == "C123"
