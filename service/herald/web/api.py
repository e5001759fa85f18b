"""The JSON API under /api: reports, runs, deliveries, alerts. Bearer-token guarded."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from herald.domain.records import Delivery
from herald.domain.reports import check_params, redacted_definition
from herald.domain.schedules import next_fire_times
from herald.domain.states import DeliveryStatus, RunStatus
from herald.domain.strict import strict_int
from herald.ports.store import StoredReport, Suppression
from herald.services import dependencies, on_time, resend, runs
from herald.web.auth import api_token_ok, container
from herald.web.errors import error

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def _authenticate() -> Any:
    return api_token_ok(container())


class ManualRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("params")
    @classmethod
    def _safe_params(cls, value: dict[str, str]) -> dict[str, str]:
        # Parameters reach summaries, subjects and chat text: no controls, bounded size.
        check_params(value, container().settings.max_param_chars)
        return value


def _limit(default: int, maximum: int = 500) -> int:
    value = strict_int(request.args.get("limit", str(default)), 1, maximum)
    if value is None:
        raise _BadQuery(f"limit must be a whole number from 1 to {maximum}")
    return value


class _BadQuery(ValueError):
    pass


@bp.errorhandler(_BadQuery)
def _bad_query(exc: _BadQuery) -> Any:
    return error(400, str(exc))


def _enum(kind: type[RunStatus] | type[DeliveryStatus], name: str) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise _BadQuery(f"{name} must be one of: {', '.join(s.value for s in kind)}") from None


def report_view(stored: StoredReport) -> dict[str, Any]:
    """A definition as the API shows it: http-source headers, URL userinfo and query values
    redacted (domain.reports.redacted_definition), whether inline or ``${env:NAME}``."""
    definition = stored.definition
    upcoming = []
    if definition.schedule and stored.next_fire_at:
        upcoming = [t.isoformat() for t in next_fire_times(definition.schedule, stored.next_fire_at, 2)]
        upcoming.insert(0, stored.next_fire_at.isoformat())
    return {
        **redacted_definition(definition),
        "next_fire_at": stored.next_fire_at.isoformat() if stored.next_fire_at else None,
        "upcoming": upcoming,
    }


def _delivery_view(d: Delivery) -> dict[str, Any]:
    doc = d.to_doc()
    doc.pop("link_token", None)  # a capability: never echoed by the API
    doc.pop("lease_until", None)
    return doc


@bp.get("/reports")
def list_reports() -> Any:
    return jsonify({"reports": [report_view(r) for r in container().store.list_reports()]})


@bp.get("/reports/<report_id>")
def get_report(report_id: str) -> Any:
    stored = container().store.get_report(report_id)
    if stored is None:
        return error(404, "no such report", report_id=report_id)
    record = on_time.on_time(container(), stored.definition)
    return jsonify({**report_view(stored), "on_time": {f"{r.days}d": r.to_doc() for r in record}})


@bp.post("/reports/<report_id>/runs")
def start_run(report_id: str) -> Any:
    """Start a manual run. ``Idempotency-Key`` makes a repeated request return the same run (200)."""
    body = ManualRun.model_validate(request.get_json(silent=True) if request.data else {})
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        return error(400, "Idempotency-Key must be 1 to 200 characters")
    try:
        run, created = runs.start_manual_run(container(), report_id, body.params, key)
    except runs.UnknownReport:
        return error(404, "no such report", report_id=report_id)
    return jsonify(run.to_doc()), 201 if created else 200


@bp.get("/runs")
@bp.get("/reports/<report_id>/runs")
def list_runs(report_id: str | None = None) -> Any:
    page = container().store.list_runs(
        report_id=report_id or request.args.get("report_id"),
        status=_enum(RunStatus, "status"),
        limit=_limit(50),
        cursor=request.args.get("cursor"),
    )
    return jsonify({"runs": [r.to_doc() for r in page.items], "next_cursor": page.next_cursor})


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Any:
    c = container()
    run = c.store.get_run(run_id)
    if run is None:
        return error(404, "no such run", run_id=run_id)
    return jsonify(runs.run_view(run, c.store.delivery_counts(run_id)))


@bp.post("/runs/<run_id>/resend-failed")
def resend_failed(run_id: str) -> Any:
    """One new attempt for each failed delivery of the run (services/resend.py). 202 queued
    (``count`` may be 0: nothing had failed); 200 the same request was made before; 404 no
    such run; 409 the run cannot be resent now."""
    from herald.web.admin_auth import api_actor

    c = container()
    try:
        result = resend.resend_failed(c, run_id, api_actor(c))
    except resend.ResendRefused as exc:
        return error(exc.status, exc.message, run_id=run_id)
    return jsonify(result.to_doc()), 200 if result.repeated else 202


@bp.get("/deliveries")
@bp.get("/runs/<run_id>/deliveries")
@bp.get("/reports/<report_id>/deliveries")
def list_deliveries(run_id: str | None = None, report_id: str | None = None) -> Any:
    page = container().store.list_deliveries(
        run_id=run_id or request.args.get("run_id"),
        report_id=report_id or request.args.get("report_id"),
        status=_enum(DeliveryStatus, "status"),
        recipient=request.args.get("recipient"),
        limit=_limit(100, 1000),
        cursor=request.args.get("cursor"),
    )
    return jsonify({"deliveries": [_delivery_view(d) for d in page.items], "next_cursor": page.next_cursor})


@bp.get("/deliveries/<delivery_id>")
def get_delivery(delivery_id: str) -> Any:
    found = container().store.get_delivery(delivery_id)
    if found is None:
        return error(404, "no such delivery", delivery_id=delivery_id)
    return jsonify(_delivery_view(found))


@bp.get("/alerts")
def list_alerts() -> Any:
    alerts = container().store.list_alerts(limit=_limit(50), report_id=request.args.get("report_id"))
    return jsonify({"alerts": [a.to_doc() for a in alerts]})


def _suppression_view(s: Suppression) -> dict[str, Any]:
    return {"recipient": s.recipient, "scope": s.scope, "reason": s.reason, "created_at": s.created_at.isoformat()}


@bp.get("/suppressions")
def list_suppressions() -> Any:
    """Suppressed recipients, newest first: scope is a report id or "*" (every report)."""
    found = container().store.list_suppressions(limit=_limit(100, 1000))
    return jsonify({"suppressions": [_suppression_view(s) for s in found]})


@bp.delete("/suppressions/<recipient>")
def lift_suppression(recipient: str) -> Any:
    """Lift one suppression: ``?scope=<report id>`` or ``?scope=*`` (required). 200 lifted;
    404 there was none for that scope; 400 invalid address or scope."""
    scope = request.args.get("scope", "")
    if "@" not in recipient or len(recipient) > 254:
        return error(400, "recipient must be an e-mail address")
    if not 1 <= len(scope) <= 128:
        return error(400, "scope is required: a report id, or * for the global suppression")
    if not container().store.lift_suppression(recipient.lower(), scope):
        return error(404, "no such suppression", recipient=recipient.lower(), scope=scope)
    return jsonify({"recipient": recipient.lower(), "scope": scope, "lifted": True})


@bp.post("/job-status")
def record_job_status() -> Any:
    """An upstream job's completion record ``{job, period, status: "succeeded", completed_at?, details?}``.

    201 recorded (waiting runs that need it are released now); 200 recorded before (the
    first record is kept and returned); 400 invalid (period is a label such as 2026-11-02,
    2026-W45 or 2026-11)."""
    record, created = dependencies.record_job_status(container(), request.get_json(silent=True), via="api")
    return jsonify({"record": record, "created": created}), 201 if created else 200


@bp.get("/job-status/<job>/<period>")
def get_job_status(job: str, period: str) -> Any:
    record = container().store.get_job_status(job, period)
    if record is None:
        return error(404, "no such job status", job=job, period=period)
    return jsonify(record)
