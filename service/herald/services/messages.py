"""What a recipient receives: the summary line and a tracked download link, never the file."""

from __future__ import annotations

import html
from datetime import datetime

from herald.domain.records import Delivery, Run
from herald.domain.reports import ReportDefinition
from herald.ports.messages import ChatMessage, EmailMessage


def subject(report: ReportDefinition, run: Run) -> str:
    title = f"{report.name} — {run.period}" if run.period else report.name
    return f"[Test] {title}" if run.test_to else title


def email_message(
    report: ReportDefinition, run: Run, delivery: Delivery, link: str, link_expires: datetime, unsubscribe_url: str
) -> EmailMessage:
    expiry = link_expires.strftime("%d %b %Y %H:%M UTC")
    note = f"\n{run.note}\n" if run.note else ""
    text = f"{run.summary}\n{note}\nDownload the report: {link}\nThe link is personal to you and expires on {expiry}.\n"
    body = (
        f"<p>{html.escape(run.summary)}</p>"
        + (f"<p><em>{html.escape(run.note)}</em></p>" if run.note else "")
        + f'<p><a href="{html.escape(link)}">Download the report</a></p>'
        + f"<p style='color:#666'>The link is personal to you and expires on {expiry}.</p>"
    )
    return EmailMessage(
        to=delivery.recipient,
        subject=subject(report, run),
        text=text,
        html=body,
        custom_args={"delivery_id": delivery.id, "run_id": run.id, "report_id": report.id},
        categories=("herald", f"report-{report.id}"),
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        idempotency_key=delivery.id,
    )


def mrkdwn(text: str) -> str:
    """Text Slack shows as written: ``&``, ``<``, ``>`` escaped, so ``<!channel>`` or
    ``<https://evil.example|Download>`` from an event, a parameter or a provider stays inert.
    https://api.slack.com/reference/surfaces/formatting#escaping"""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chat_message(
    report: ReportDefinition, run: Run, delivery: Delivery, link: str, file: tuple[str, bytes] | None
) -> ChatMessage:
    note = f"\n_{mrkdwn(run.note)}_" if run.note else ""
    text = f"*{mrkdwn(subject(report, run))}*\n{mrkdwn(run.summary)}{note}\n<{link}|Download the report>"
    return ChatMessage(
        target=delivery.recipient,
        text=text,
        idempotency_key=delivery.id,
        file_name=file[0] if file else None,
        file_bytes=file[1] if file else None,
    )
