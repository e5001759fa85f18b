"""Sign SendGrid Event Webhook batches the way SendGrid does, and build events.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256 and sends the base64
DER signature and the timestamp in two headers; the verification key it shows is the
base64 DER of the public key (SendGrid's "Event Webhook security features" page). Tests
make their own key pair and sign with ``cryptography`` from that description; every
signature is also checked with the ``sendgrid`` library's own ``EventWebhook`` helper,
so the signer cannot drift from what SendGrid's code accepts.
"""

from __future__ import annotations

import base64
import itertools
import json
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sendgrid.helpers.eventwebhook import EventWebhook

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_ids = itertools.count(1)


class EventSigner:
    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        signature = self.private_key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        encoded = base64.b64encode(signature).decode()
        try:
            text = body.decode("utf-8")  # the helper wants the payload as text
        except UnicodeDecodeError:
            text = None  # a deliberately broken body: nothing for the helper to check
        if text is not None:
            assert EventWebhook(self.public_key).verify_signature(text, encoded, str(timestamp))
        return {
            SIGNATURE_HEADER: encoded,
            TIMESTAMP_HEADER: str(timestamp),
            "Content-Type": "application/json",
        }

    def signed(self, events: list[dict[str, Any]], timestamp: int) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(events, separators=(",", ":")).encode()
        return body, self.headers(body, timestamp)


def event(kind: str, delivery: Any, at: datetime, *, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """One event as SendGrid posts it for a message Herald sent (custom args at top level)."""
    mid = message_id or getattr(delivery, "provider_message_id", None) or "m" + str(getattr(delivery, "id", delivery))
    doc: dict[str, Any] = {
        "email": getattr(delivery, "recipient", "someone@example.com"),
        "timestamp": int(at.timestamp()),
        "smtp-id": f"<{mid}@ismtpd-1>",
        "event": kind,
        "category": ["herald"],
        "sg_event_id": f"ev-{next(_ids):08d}",
        "sg_message_id": f"{mid}.filterdrecv-1-2-3.0",
    }
    delivery_id = getattr(delivery, "id", None)
    if delivery_id:
        doc.update(delivery_id=delivery_id, run_id=delivery.run_id, report_id=delivery.report_id)
    doc.update(extra)
    return doc
