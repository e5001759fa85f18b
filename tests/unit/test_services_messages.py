"""services/messages.py: what a recipient receives (README: "Emails carry the summary line
and a personal download link, never an attachment"; Slack text is shown as written: ``&``,
``<``, ``>`` escaped, https://api.slack.com/reference/surfaces/formatting#escaping)."""

from __future__ import annotations

from datetime import UTC, datetime

from herald.domain.records import Delivery
from herald.services import messages as m
from herald.services.runs import new_run
from tests import factories

T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
REPORT = factories.report()
LINK = "https://herald.example/l/tok"


def run(**fields):
    r = new_run(REPORT, "run-1", "schedule", T0, slot=T0)
    return r.model_copy(update={"summary": "Board pack for 2026-11-02", **fields})


def delivery(channel="slack", recipient="C0123"):
    return Delivery(
        id="d-1",
        run_id="run-1",
        report_id="board-pack",
        channel=channel,
        recipient=recipient,
        created_at=T0,
        updated_at=T0,
    )


def test_mrkdwn_escapes_the_three_control_characters_and_nothing_else():
    assert m.mrkdwn("<!channel> & <https://evil.example|Download>") == (
        "&lt;!channel&gt; &amp; &lt;https://evil.example|Download&gt;"
    )
    assert m.mrkdwn("&amp;") == "&amp;amp;"  # already-escaped text is shown as written
    assert m.mrkdwn("*bold* _it_ `code`") == "*bold* _it_ `code`"


def test_a_slack_message_is_the_subject_the_summary_and_the_link():
    message = m.chat_message(REPORT, run(), delivery(), LINK, None)
    assert (
        message.text
        == "*Board pack — 2026-11-02*\nBoard pack for 2026-11-02\n<https://herald.example/l/tok|Download the report>"
    )
    assert message.target == "C0123" and message.idempotency_key == "d-1"
    assert message.file_name is None and message.file_bytes is None


def test_a_slack_message_carries_the_note_and_escapes_what_came_from_outside():
    message = m.chat_message(REPORT, run(summary="P&L <b>", note="Data as of <then>"), delivery(), LINK, None)
    assert message.text == (
        "*Board pack — 2026-11-02*\nP&amp;L &lt;b&gt;\n_Data as of &lt;then&gt;_\n"
        "<https://herald.example/l/tok|Download the report>"
    )


def test_a_slack_message_may_carry_the_file():
    message = m.chat_message(REPORT, run(), delivery(), LINK, ("board-pack.pdf", b"%PDF"))
    assert message.file_name == "board-pack.pdf" and message.file_bytes == b"%PDF"


def test_the_subject_names_the_period_and_marks_tests():
    assert m.subject(REPORT, run()) == "Board pack — 2026-11-02"
    assert m.subject(REPORT, run(period="")) == "Board pack"
    assert m.subject(REPORT, run(test_to="me@example.com")) == "[Test] Board pack — 2026-11-02"
    slack = m.chat_message(REPORT, run(test_to="me@example.com", summary="s"), delivery(), LINK, None)
    assert slack.text.startswith("*[Test] Board pack — 2026-11-02*\n")


def test_an_email_is_the_summary_a_personal_link_and_one_click_unsubscribe():
    expires = datetime(2026, 11, 9, 7, 0, tzinfo=UTC)
    message = m.email_message(
        REPORT, run(note="Data as of <then>"), delivery("email", "a@example.com"), LINK, expires, "https://u.example/x"
    )
    assert message.to == "a@example.com" and message.subject == "Board pack — 2026-11-02"
    assert message.text == (
        "Board pack for 2026-11-02\n\nData as of <then>\n\nDownload the report: https://herald.example/l/tok\n"
        "The link is personal to you and expires on 09 Nov 2026 07:00 UTC.\n"
    )
    assert "<em>Data as of &lt;then&gt;</em>" in message.html
    assert message.headers == {
        "List-Unsubscribe": "<https://u.example/x>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert message.idempotency_key == "d-1" and message.categories == ("herald", "report-board-pack")
