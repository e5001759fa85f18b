"""Every message shape Herald sends, through SendGridMailer, validated by Prism serving
SendGrid's own OpenAPI spec (tests/contract/sendgrid/tsg_mail_v3.yaml, vendored from
twilio/sendgrid-oai under the MIT licence; see the README beside it).

Prism answers 202 for a valid request and 400 with an ``sl-violations`` header for an
invalid one; any violation header, even on a 202, fails the test.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import requests
import urllib3

from herald.adapters.sendgrid_mailer import SendGridConfig, SendGridMailer
from herald.ports.messages import EmailMessage
from tests.support.sendgrid_library import build_mail

pytestmark = pytest.mark.emulator

ONE_CLICK = "<https://herald.example.com/u/3f9a0c>, <mailto:unsubscribe@herald.example.com?subject=3f9a0c>"
IDS = {"delivery_id": "dlv_5b1e", "run_id": "run_77a0", "report_id": "board-pack"}


class RecordingPool(urllib3.HTTPConnectionPool):
    """Keeps Prism's answers: the violations header is the point of the test."""

    def __init__(self, url: str) -> None:
        parsed = urllib3.util.parse_url(url)
        super().__init__(parsed.host, parsed.port)
        self.answers: list[urllib3.BaseHTTPResponse] = []

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> urllib3.BaseHTTPResponse:
        response = super().urlopen(method, url, redirect=redirect, **kw)
        self.answers.append(response)
        return response


BASE_CONFIG = SendGridConfig(
    api_key="SG.contract", from_email="reports@herald.example.com", from_name="Herald Reports",
    reply_to="ops@herald.example.com", categories=("herald",),
)  # fmt: skip
BASE_MESSAGE = EmailMessage(
    to="ana@example.com", subject="Board pack — March 2026", text="Summary\nhttps://herald.example.com/l/tok",
    html="<p>Summary</p><p><a href='https://herald.example.com/l/tok'>Download</a></p>",
    custom_args=IDS, categories=("board-pack",), headers={"List-Unsubscribe": ONE_CLICK}, idempotency_key="dlv_5b1e",
)  # fmt: skip

SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default: one-click unsubscribe, categories, opens tracked": ({}, {}),
    "asm group instead of list-unsubscribe": ({"asm_group_id": 12345}, {}),
    "asm group and extra headers": ({"asm_group_id": 1}, {"headers": {"List-Unsubscribe": ONE_CLICK, "X-Ref": "r"}}),
    "mailto-only unsubscribe": ({}, {"headers": {"List-Unsubscribe": "<mailto:u@herald.example.com>"}}),
    "no unsubscribe header": ({}, {"headers": {}}),
    "tracking all on": ({"open_tracking": True, "click_tracking": True}, {}),
    "tracking all off": ({"open_tracking": False, "click_tracking": False}, {}),
    "no categories": ({"categories": ()}, {"categories": ()}),
    "ten categories": ({}, {"categories": tuple(f"cat-{i}" for i in range(12))}),
    "no reply-to": ({"reply_to": ""}, {}),
    "no sender name": ({"from_name": ""}, {}),
    "text only": ({}, {"html": ""}),
    "html only": ({}, {"text": ""}),
    "no custom args": ({}, {"custom_args": {}}),
    "non-ASCII names and content": (
        {"from_name": "Zoë Ångström — Rapports", "reply_to": "equipe@herald.example.com"},
        {
            "subject": "Rapport mensuel — März 2026 ✓ 报告",
            "text": "Résumé: 1 234,5 €",
            "html": "<p>Grüße, 你好</p>",
            "custom_args": {**IDS, "label": "Qualité"},
        },
    ),
    "plus-addressed recipient": ({}, {"to": "ana+reports@example.co.uk"}),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_message_shape_satisfies_sendgrid_spec(prism_url: str, shape: str) -> None:
    config_changes, message_changes = SHAPES[shape]
    config = replace(BASE_CONFIG, host=prism_url, **config_changes)
    message = replace(BASE_MESSAGE, **message_changes)
    pool = RecordingPool(prism_url)

    SendGridMailer(config, pool=pool).send(message)  # a 4xx from Prism raises DeliveryError: fails

    [answer] = pool.answers
    assert "sl-violations" not in answer.headers, answer.headers["sl-violations"]
    assert answer.status == 202
    [personalization] = build_mail(config, message).get()["personalizations"]
    assert len(personalization["to"]) == 1


def test_prism_does_reject_message_level_custom_args(prism_url: str) -> None:
    """Guards the guard: the spec types message-level custom_args as a string, which is
    why Herald puts them on the personalization. If Prism stopped flagging this, the
    test above would prove nothing."""
    body = build_mail(BASE_CONFIG, BASE_MESSAGE).get()
    body["custom_args"] = IDS

    answer = requests.post(
        f"{prism_url}/v3/mail/send", json=body, headers={"Authorization": "Bearer SG.contract"}, timeout=10
    )

    assert answer.status_code == 400
    assert "custom_args" in answer.headers["sl-violations"]
