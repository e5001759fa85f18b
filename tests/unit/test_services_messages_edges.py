"""services/messages.py edges: an e-mail for a run without a note is the summary, the
link and its expiry, with no note paragraph in either part."""

from __future__ import annotations

from datetime import UTC, datetime

from herald.services import messages as m
from tests.unit.test_services_messages import LINK, REPORT, delivery, run


def test_an_email_without_a_note_has_no_note_paragraph():
    expires = datetime(2026, 11, 9, 7, 0, tzinfo=UTC)
    message = m.email_message(REPORT, run(), delivery("email", "a@example.com"), LINK, expires, "https://u.example/x")
    assert message.text == (
        "Board pack for 2026-11-02\n\nDownload the report: https://herald.example/l/tok\n"
        "The link is personal to you and expires on 09 Nov 2026 07:00 UTC.\n"
    )
    assert message.html.startswith('<p>Board pack for 2026-11-02</p><p><a href="https://herald.example/l/tok">')
    assert "<em>" not in message.html
