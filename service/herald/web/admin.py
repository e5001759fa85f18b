"""The admin pages under /admin: reports, a report's delivery report (+ CSV), runs, alerts.

Server-rendered, paginated with the store's cursors, every query one of the store's
indexed ones. Auth and CSRF: web/admin_auth.py. Status contract: pages 200; unknown
report 404; bad filter 400; actions are POSTs answering 303 back to the page (or the
refusal page with 400 / 403 / 404 / 409).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from typing import Any

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from herald.domain.records import Run
from herald.domain.states import DeliveryStatus, RunStatus
from herald.domain.strict import strict_int
from herald.ports.store import pages
from herald.services import definitions, on_time, resend
from herald.services import runs as run_service
from herald.web import admin_auth, admin_views
from herald.web.auth import container

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin", static_folder="static", static_url_path="/static")

PAGE_SIZES = (25, 50, 100, 200)
ENGAGEMENT_SCAN_MAX = 5000  # opens/clicks/downloads are summed over a run's records up to this size
RUNS_IN_TOTALS = 8
CHANGES_SHOWN = 10  # the newest applied changes shown on a report's page
CSV_PAGE = 1000
OPEN_ENDPOINTS = {"admin.login", "admin.static"}


@bp.record_once
def _configure(state: Any) -> None:
    admin_auth.configure(state.app, state.app.extensions["herald"])


@bp.before_request
def _authenticate() -> Any:
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    user, status, reason = admin_auth.identify(container())
    if user is None:
        wants_page = request.method == "GET" and not request.path.endswith(".csv")
        if status == 401 and wants_page and container().settings.backend != "gcp":
            return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
        return admin_auth.refusal(status, reason)
    g.admin_user = user
    if request.method == "POST":
        return admin_auth.csrf_refusal()
    return None


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    c = container()
    return {
        "user": admin_auth.user(),
        "csrf_token": admin_auth.csrf_token,
        "open_on_loopback": admin_auth.open_on_loopback(c.settings),
        "backend": c.settings.backend,
        "fmt": admin_views.fmt,
        "duration": admin_views.duration,
    }


class BadFilter(ValueError):
    pass


@bp.errorhandler(BadFilter)
def _bad_filter(exc: BadFilter) -> Any:
    return admin_auth.refusal(400, str(exc))


def _enum(kind: type[RunStatus] | type[DeliveryStatus], name: str) -> Any:
    raw = request.args.get(name, "")
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise BadFilter(f"{name} must be one of: {', '.join(s.value for s in kind)}") from None


def _page_size() -> int:
    value = strict_int(request.args.get("limit", "50"))
    if value not in PAGE_SIZES:
        raise BadFilter(f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
    return value


REPORT_FILTERS = ("run", "status", "recipient", "limit")
RUNS_FILTERS = ("report", "status", "limit")


def _kept_filters(names: tuple[str, ...]) -> dict[str, Any]:
    """The page's own filters for its paging links. Only known names: url_for would take a
    ``report_id`` or ``_scheme`` from the query string as its own argument (a 500)."""
    return {k: v for k, v in request.args.items() if k in names}


def _safe_next(target: str | None, default: str) -> str:
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return default


# Login ----------------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    c = container()
    target = _safe_next(request.values.get("next"), url_for("admin.reports"))
    if c.settings.backend == "gcp":
        return admin_auth.refusal(404, "On Google Cloud the admin interface signs in through IAP.")
    if admin_auth.open_on_loopback(c.settings):
        return redirect(target)
    error = ""
    if request.method == "POST":
        client = request.remote_addr or "?"
        limiter = admin_auth.login_limiter(c)
        now = c.clock.now().timestamp()
        wait = limiter.retry_after(client, now)
        if wait:
            log.warning("admin sign-in rate-limited", extra={"remote": client})
            page, status = admin_auth.refusal(429, f"Too many failed sign-ins; try again in {wait} seconds.")
            return page, status, {"Retry-After": str(wait)}
        if admin_auth.check_login(c, request.form.get("token", "")):
            name = admin_views.plain(request.form.get("name", ""))[:80]
            admin_auth.start_session(c, f"{name} (token)" if name else "token holder")
            log.info("admin signed in", extra={"actor": name or "token holder", "remote": client})
            return redirect(target, code=303)
        limiter.failed(client, now)
        log.warning("admin sign-in refused", extra={"remote": client})
        error = "That token is not right."
    configured = bool(admin_auth.admin_token(c.settings))
    status = 401 if error else 200
    return render_template("admin/login.html", next=target, error=error, configured=configured), status


@bp.post("/logout")
def logout() -> Any:
    """Sign out: this session is revoked server-side, so a copied cookie stops working too."""
    admin_auth.end_session(container())
    return redirect(url_for("admin.login"), code=303)


@bp.post("/sessions/revoke-all")
def sign_out_everywhere() -> Any:
    """Sign out everywhere: a new session generation; every session issued before is refused."""
    c = container()
    actor = admin_auth.user()
    generation = admin_auth.sign_out_everywhere(c, actor)
    log.info("admin action", extra={"actor": actor, "action": "sign_out_everywhere", "generation": generation})
    admin_auth.end_session(c)
    return redirect(url_for("admin.login"), code=303)


# Reports --------------------------------------------------------------------------------
@bp.get("/")
@bp.get("")
def reports() -> Any:
    c = container()
    now = c.clock.now()
    rows = []
    for stored in c.store.list_reports():
        d = stored.definition
        last = c.store.list_runs(report_id=d.id, limit=1).items
        rows.append(
            {
                "definition": d,
                "schedule": admin_views.schedule_view(d.schedule, stored.next_fire_at, now) if d.schedule else None,
                "triggers": list(getattr(d, "triggers", None) or []),
                "depends_on": [_dependency(c, dep, last[0] if last else None) for dep in getattr(d, "depends_on", [])],
                "last_run": last[0] if last else None,
                "on_time": on_time.on_time(c, d, now),
            }
        )
    return render_template("admin/reports.html", rows=rows, now=now)


def _dependency(c: Any, dep: Any, run: Run | None) -> dict[str, Any]:
    """A dependency and, for the last run's period, whether its completion record arrived."""
    view = {"job": getattr(dep, "job", str(dep)), "period": getattr(dep, "period", ""), "state": "", "detail": ""}
    view["wait"] = getattr(dep, "wait_up_to", "")
    view["on_timeout"] = getattr(dep, "on_timeout", "")
    if run is not None and run.period and view["period"] == "same":
        record = c.store.get_job_status(view["job"], run.period)
        view["state"] = "arrived" if record else ("waiting" if run.status == RunStatus.WAITING else "not received")
        view["detail"] = f"for {run.period}"
    return view


# The delivery report --------------------------------------------------------------------
def _filters(report_id: str) -> dict[str, Any]:
    c = container()
    run_arg = request.args.get("run", "")
    # Test runs ("send a test to me") are never part of the report's figures.
    recent = [r for r in c.store.list_runs(report_id=report_id, limit=RUNS_IN_TOTALS).items if not r.test_to]
    if run_arg == "all":
        run = None
    elif run_arg:
        run = c.store.get_run(run_arg)
        if run is None or run.report_id != report_id:
            raise BadFilter("no such run for this report")
    else:
        run = recent[0] if recent else None
    return {
        "run_arg": run_arg,
        "run": run,
        "recent": recent,
        "status": _enum(DeliveryStatus, "status"),
        "recipient": request.args.get("recipient", "").strip() or None,
    }


@bp.get("/reports/<report_id>")
def delivery_report(report_id: str) -> Any:
    c = container()
    stored = c.store.get_report(report_id)
    if stored is None:
        return admin_auth.refusal(404, "No such report.")
    f = _filters(report_id)
    limit = _page_size()
    run = f["run"]
    page = c.store.list_deliveries(
        run_id=run.id if run else None,
        report_id=None if run else report_id,
        status=f["status"],
        recipient=f["recipient"],
        limit=limit,
        cursor=request.args.get("cursor") or None,
    )
    runs = f["recent"] if run is None or any(r.id == run.id for r in f["recent"]) else [run, *f["recent"]]
    totals = [(r, admin_views.run_totals(r, c.store.delivery_counts(r.id))) for r in runs]
    selected = next((t for r, t in totals if run and r.id == run.id), None)
    engagement = None
    if run is not None and selected is not None and selected["total"] <= ENGAGEMENT_SCAN_MAX:
        engagement = admin_views.engagement(_all_deliveries(c, run.id))
    query = _kept_filters(REPORT_FILTERS)
    return render_template(
        "admin/delivery_report.html",
        report=stored.definition,
        f=f,
        run=run,
        rows=[admin_views.delivery_row(d) for d in page.items if run is not None or not d.test],
        next_url=url_for("admin.delivery_report", report_id=report_id, **query, cursor=page.next_cursor)
        if page.next_cursor
        else None,
        first_url=url_for("admin.delivery_report", report_id=report_id, **query)
        if request.args.get("cursor")
        else None,
        csv_url=url_for(
            "admin.deliveries_csv", report_id=report_id, **{k: v for k, v in query.items() if k != "limit"}
        ),
        totals=totals,
        selected=selected,
        engagement=engagement,
        # Who changed this definition, when, and which fields (values stay out: they may hold secrets).
        changes=list(reversed(definitions.history(c.store, report_id)))[:CHANGES_SHOWN],
        engagement_max=ENGAGEMENT_SCAN_MAX,
        statuses=[s.value for s in DeliveryStatus],
        limit=limit,
        page_sizes=PAGE_SIZES,
    )


def _all_deliveries(c: Any, run_id: str) -> list[Any]:
    listing = pages(lambda cursor: c.store.list_deliveries(run_id=run_id, limit=CSV_PAGE, cursor=cursor))
    return [d for items in listing for d in items]


@bp.get("/reports/<report_id>/deliveries.csv")
def deliveries_csv(report_id: str) -> Any:
    """Every delivery matching the page's filters, streamed page by page (constant memory)."""
    c = container()
    if c.store.get_report(report_id) is None:
        return admin_auth.refusal(404, "No such report.")
    f = _filters(report_id)
    run = f["run"]

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(admin_views.CSV_COLUMNS)
        listing = pages(
            lambda cursor: c.store.list_deliveries(
                run_id=run.id if run else None,
                report_id=None if run else report_id,
                status=f["status"],
                recipient=f["recipient"],
                limit=CSV_PAGE,
                cursor=cursor,
            )
        )
        for items in listing:
            for d in items:
                writer.writerow(admin_views.csv_values(d))
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    name = f"{report_id}-{run.period if run else 'all'}-deliveries.csv".replace('"', "")
    log.info(
        "admin export", extra={"actor": admin_auth.user(), "report_id": report_id, "run_id": run.id if run else ""}
    )
    return Response(
        stream_with_context(generate()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


# Runs -----------------------------------------------------------------------------------
@bp.get("/runs")
def runs() -> Any:
    c = container()
    page = c.store.list_runs(
        report_id=request.args.get("report") or None,
        status=_enum(RunStatus, "status"),
        limit=_page_size(),
        cursor=request.args.get("cursor") or None,
    )
    recent_alerts = c.store.list_alerts(limit=500)
    alerts_by_run: dict[str, list[Any]] = {}
    for alert in recent_alerts:
        if alert.run_id:
            alerts_by_run.setdefault(alert.run_id, []).append(alert)
    reports = {s.definition.id: s.definition for s in c.store.list_reports()}
    now = c.clock.now()
    items = []
    for run in page.items:
        end = run.finished_at or (now if run.status not in (RunStatus.MISSED, RunStatus.SKIPPED) else None)
        report = reports.get(run.report_id)
        items.append(
            {
                "run": run,
                "name": report.name if report else run.report_id,
                "zone": report.schedule.timezone if report and report.schedule else "UTC",
                "heartbeat": "sent"
                if run.heartbeat_sent
                else ("—" if not report or not report.heartbeat_url else "not yet"),
                "alerts": alerts_by_run.get(run.id, []),
                "counts": c.store.delivery_counts(run.id),
                "total_seconds": (end - run.created_at).total_seconds() if end else 0,
                "waited": admin_views.duration(run.created_at, run.started_at),
                "ran": admin_views.duration(run.started_at, run.finished_at),
                "running_for": admin_views.duration(run.started_at or run.created_at, now)
                if run.finished_at is None and end
                else "",
            }
        )
    longest = max((i["total_seconds"] for i in items), default=0) or 1
    query = _kept_filters(RUNS_FILTERS)
    return render_template(
        "admin/runs.html",
        items=items,
        longest=longest,
        reports=sorted(reports.values(), key=lambda r: r.name),
        statuses=[s.value for s in RunStatus],
        selected_status=request.args.get("status", ""),
        selected_report=request.args.get("report", ""),
        next_url=url_for("admin.runs", **query, cursor=page.next_cursor) if page.next_cursor else None,
        first_url=url_for("admin.runs", **query) if request.args.get("cursor") else None,
    )


# Alerts and failures --------------------------------------------------------------------
@bp.get("/alerts")
def alerts() -> Any:
    c = container()
    alerts = c.store.list_alerts(limit=100, report_id=request.args.get("report") or None)
    failing = []
    for status in (RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.DELIVERING):
        for run in c.store.list_runs(status=status, limit=20).items:
            counts = c.store.delivery_counts(run.id)
            if counts.get(DeliveryStatus.FAILED.value):
                page = c.store.list_deliveries(run_id=run.id, status=DeliveryStatus.FAILED, limit=20)
                failing.append({"run": run, "failed": counts[DeliveryStatus.FAILED.value], "deliveries": page.items})
    failing.sort(key=lambda f: f["run"].created_at, reverse=True)
    return render_template(
        "admin/alerts.html",
        alerts=[(a, "ops" if "@" not in a.target else "owner") for a in alerts],
        failing=failing,
        suppressions=c.store.list_suppressions(limit=200),
    )


@bp.post("/runs/<run_id>/resend-failed")
def resend_failed(run_id: str) -> Any:
    c = container()
    actor = admin_auth.user()
    try:
        result = resend.resend_failed(c, run_id, actor)
    except resend.ResendRefused as exc:
        log.warning("admin resend refused", extra={"actor": actor, "run_id": run_id, "reason": exc.message})
        return admin_auth.refusal(exc.status, exc.message)
    if result.repeated:
        flash(f"This resend was already requested by {result.actor}; nothing was sent twice.", "info")
    elif result.requested:
        flash(f"Queued a new attempt for {len(result.requested)} failed deliveries.", "ok")
    else:
        flash("There are no failed deliveries to resend in this run.", "info")
    log.info(
        "admin action",
        extra={"actor": actor, "action": "resend_failed", "run_id": run_id, "deliveries": len(result.requested)},
    )
    return redirect(_safe_next(request.form.get("next"), url_for("admin.alerts")), code=303)


@bp.post("/reports/<report_id>/test")
def send_test(report_id: str) -> Any:
    """ "Send a test to me": render the report now and e-mail it only to the signed-in person
    (their IAP address) or, with a token login, the report's owner. Marked as a test and
    kept out of the report's figures."""
    c = container()
    actor = admin_auth.user()
    to = actor if "@" in actor else ""
    try:
        run, _ = run_service.start_manual_run(
            c, report_id, request_id=request.form.get("request_id") or None, test_to=to
        )
    except run_service.UnknownReport:
        return admin_auth.refusal(404, "No such report.")
    flash(f"A test of this report is on its way to {run.test_to} (run {run.id}).", "ok")
    log.info("admin action", extra={"actor": actor, "action": "send_test", "report_id": report_id, "run_id": run.id})
    return redirect(url_for("admin.delivery_report", report_id=report_id, run=run.id), code=303)


@bp.post("/suppressions/lift")
def lift_suppression() -> Any:
    c = container()
    recipient = request.form.get("recipient", "").strip()
    scope = request.form.get("scope", "").strip()
    if not recipient or not scope:
        return admin_auth.refusal(400, "recipient and scope are required")
    lifted = c.store.lift_suppression(recipient, scope)
    log.info(
        "admin action",
        extra={
            "actor": admin_auth.user(),
            "action": "lift_suppression",
            "recipient": recipient,
            "scope": scope,
            "lifted": lifted,
        },
    )
    flash(f"Lifted the suppression of {recipient} ({scope})." if lifted else "That suppression was already gone.", "ok")
    return redirect(_safe_next(request.form.get("next"), url_for("admin.alerts")), code=303)
