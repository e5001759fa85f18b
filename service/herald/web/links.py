"""Recipients' download links (ARCHITECTURE.md decision 7) and the embedded blob route.

GET /l/<token> shows a page with a button; only the button's POST counts as a download
and redirects to a short-lived signed URL, so mail scanners that follow links with GET
never count as downloads.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request

from herald.domain.records import Delivery
from herald.domain.strict import has_control, strict_int
from herald.ports.container import Container
from herald.services import links
from herald.web.auth import container

bp = Blueprint("links", __name__)

DOWNLOAD_URL_TTL = timedelta(minutes=5)


def _delivery(c: Container, token: str) -> Delivery:
    if not 16 <= len(token) <= 64:
        abort(404)
    found = c.store.get_delivery_by_token(token)
    if found is None:
        abort(404)
    return found


def _expired(c: Container, d: Delivery) -> bool:
    return c.clock.now() > d.created_at + timedelta(seconds=c.settings.link_ttl_seconds)


@bp.get("/l/<token>")
def link_page(token: str) -> Any:
    c = container()
    d = _delivery(c, token)
    run = c.store.get_run(d.run_id)
    stored = c.store.get_report(d.report_id)
    name = stored.definition.name if stored else d.report_id
    expired = _expired(c, d)
    return render_template(
        "link.html",
        token=token,
        report_name=name,
        period=run.period if run else "",
        summary=run.summary if run else "",
        expired=expired,
    ), (410 if expired else 200)


@bp.post("/l/<token>")
def download(token: str) -> Any:
    c = container()
    d = _delivery(c, token)
    if _expired(c, d):
        return link_page(token)
    run = c.store.get_run(d.run_id)
    if run is None or not run.artifact_key:
        abort(404)
    links.record_download(c, d, request.user_agent.string or "")
    filename = run.artifact_key.rsplit("/", 1)[-1]
    return redirect(c.blobs.signed_url(run.artifact_key, DOWNLOAD_URL_TTL, filename), code=303)


@bp.post("/l/<token>/renew")
def renew(token: str) -> Any:
    """An expired link asks for a fresh one, sent to the same address (services/links.renew).
    202 on its way; 409 the link has not expired; 429 + Retry-After asked too recently; 404 unknown token."""
    c = container()
    d = _delivery(c, token)
    outcome = links.renew(c, d)
    if outcome.status == "not-expired":
        return _notice("This link is still valid.", "Use the download button on the link's page.", 409)
    if outcome.status == "limited":
        wait = max(1, math.ceil(outcome.retry_after or 1))
        later = f"You can ask again in {wait // 60 or 1} minutes."
        page, status = _notice("A fresh link was sent recently.", later, 429)
        return page, status, {"Retry-After": str(wait)}
    if outcome.status == "suppressed":
        return _notice("No link was sent.", "This address is unsubscribed from this report.", 409)
    return _notice("A fresh link is on its way.", "It goes to the address this link was sent to.", 202)


def _notice(title: str, text: str, status: int) -> tuple[Any, int]:
    return render_template("notice.html", title=title, text=text), status


@bp.get("/blobs/<path:key>")
def blob(key: str) -> Any:
    """The embedded backend's signed URLs land here; GCS serves them in production."""
    c = container()
    verify = getattr(c.blobs, "verify", None)
    args = request.args
    expires, sig, filename = args.get("expires", ""), args.get("sig", ""), args.get("filename", "")
    # Strict before the store's own check: "²" passes isdigit() but not int(); a non-ASCII
    # signature makes hmac.compare_digest raise (issue 11). Both are simply not authentic.
    if verify is None or strict_int(expires) is None or not sig.isascii() or has_control(filename):
        abort(403)
    if not verify(key, expires, filename, sig):
        abort(403)
    try:
        data, content_type = c.blobs.get(key)
    except KeyError:
        abort(404)
    filename = args.get("filename", "report").replace('"', "")
    return data, 200, {"Content-Type": content_type, "Content-Disposition": f'attachment; filename="{filename}"'}
