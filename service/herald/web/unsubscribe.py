"""One-click unsubscribe (RFC 8058): ``/unsubscribe/<token>``, the target of every report
e-mail's ``List-Unsubscribe`` header (services/messages.py).

A mail client that supports ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` POSTs
``List-Unsubscribe=One-Click`` to the URL, without cookies or a session: the token (the
recipient's 192-bit link token) is the whole authority. The POST suppresses that address
for that report only (later runs record it as suppressed). A GET only shows a page with a
confirm button, because scanners follow links (RFC 8058 section 3.2: GET must not
unsubscribe). 200 page; 404 plain for an unknown token or a non-e-mail delivery.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template

from herald.domain.records import Delivery
from herald.services import links
from herald.web.auth import container

bp = Blueprint("unsubscribe", __name__)


def _delivery(token: str) -> Delivery:
    found = container().store.get_delivery_by_token(token) if 16 <= len(token) <= 64 else None
    if found is None or found.channel != "email":
        abort(404)
    return found


def _report_name(d: Delivery) -> str:
    stored = container().store.get_report(d.report_id)
    return stored.definition.name if stored else d.report_id


@bp.get("/unsubscribe/<token>")
def confirm_page(token: str) -> Any:
    d = _delivery(token)
    return render_template(
        "notice.html",
        title=f"Unsubscribe from {_report_name(d)}?",
        text="You will no longer receive this report by e-mail.",
        action=f"/unsubscribe/{token}",
        button="Unsubscribe",
    )


@bp.post("/unsubscribe/<token>")
def one_click(token: str) -> Any:
    d = _delivery(token)
    links.unsubscribe(container(), d)
    return render_template(
        "notice.html",
        title="You are unsubscribed.",
        text=f"You will no longer receive {_report_name(d)} by e-mail. Its owner can add you back.",
    )
