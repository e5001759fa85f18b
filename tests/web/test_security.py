"""Issue 11, through the HTTP surface: fail closed, loopback mode is no CSRF or DNS-rebinding
target, revocable admin sessions, secrets never leave, untrusted text is inert, and the
headers every response carries. Each refusal also checks that nothing was written."""

from __future__ import annotations

import csv
import io
import re
import shlex
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn.util import import_app
from werkzeug.serving import make_server

from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.store import Suppression
from herald.services.messages import chat_message, mrkdwn
from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from herald.web.security import QuietRequestHandler
from tests import factories
from tests.browser import seed
from tests.web.serving import served_on_loopback

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "admin-token-for-tests"
JOB = {"job": "warehouse-etl", "period": "2026-11-02", "status": "succeeded"}


def nothing_written(c: Any) -> bool:
    """No run, no job-status record, no task: the refused request changed nothing."""
    return (
        c.store.list_runs(limit=5).items == []
        and c.store.get_job_status(JOB["job"], JOB["period"]) is None
        and c.queue.tasks == {}
    )


# 1. Fail closed -----------------------------------------------------------------------------
def _image_app_spec() -> str:
    """The WSGI app the Dockerfile's CMD hands gunicorn (the last argument, shell-quoted)."""
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return shlex.split(cmd.removeprefix("CMD "))[-1]


def test_the_images_command_without_a_token_refuses_api_and_admin(tmp_path, monkeypatch):
    for name in ("HERALD_API_TOKEN", "HERALD_ADMIN_TOKEN", "HERALD_HOST", "HERALD_BACKEND", "HERALD_ROLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HERALD_DATA_DIR", str(tmp_path))
    app = import_app(_image_app_spec())  # exactly what gunicorn does with the CMD's argument
    c = app.extensions["herald"]
    assert c.settings.host == "127.0.0.1"  # the old rule would have called this "loopback"
    client = app.test_client()  # the test client's peer is 127.0.0.1: still refused
    assert client.get("/api/reports").status_code == 401
    assert client.post("/api/job-status", json=JOB).status_code == 401
    admin = client.get("/admin")
    assert admin.status_code == 302 and "/admin/login" in admin.headers["Location"]
    assert client.get("/admin/reports/board-pack/deliveries.csv").status_code == 401
    assert "admin interface is closed" in client.get("/admin/login").get_data(as_text=True)
    assert client.post("/admin/login", data={"token": ""}).status_code == 401
    assert c.store.get_job_status(JOB["job"], JOB["period"]) is None


def test_serve_bound_to_all_interfaces_is_closed_without_a_token(c):
    client = served_on_loopback(c, "0.0.0.0").test_client()
    assert client.get("/api/reports").status_code == 401
    assert client.post("/api/job-status", json=JOB).status_code == 401
    assert client.get("/admin").status_code == 302
    assert nothing_written(c)


def test_serve_on_loopback_is_open_to_loopback_callers_only(c):
    client = served_on_loopback(c).test_client()
    assert client.get("/api/reports").status_code == 200
    stranger = {"REMOTE_ADDR": "192.0.2.7"}  # e.g. through a port forward to the loopback socket
    assert client.get("/api/reports", environ_base=stranger).status_code == 401
    assert client.post("/api/job-status", json=JOB, environ_base=stranger).status_code == 401
    assert client.get("/admin", environ_base=stranger).status_code == 302
    assert nothing_written(c)


# 2. Loopback mode is not a CSRF or DNS-rebinding target -----------------------------------------
def test_a_cross_site_text_plain_post_starts_no_run(client, c):
    # What a hostile page can send without a preflight: a "simple" text/plain POST.
    response = client.post(
        "/api/reports/board-pack/runs",
        data='{"params": {}}',
        content_type="text/plain",
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403
    # Without the browser's Origin headers, the content type alone still refuses it.
    assert client.post("/api/reports/board-pack/runs", data="{}", content_type="text/plain").status_code == 415
    assert nothing_written(c)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_site_json_calls_are_refused(client, c, headers):
    assert client.post("/api/job-status", json=JOB, headers=headers).status_code == 403
    assert client.delete("/api/suppressions/a@example.com?scope=*", headers=headers).status_code == 403
    assert nothing_written(c)


def test_same_origin_calls_still_work(client, c):
    headers = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/job-status", json=JOB, headers=headers).status_code == 201


def test_a_foreign_host_is_refused_dns_rebinding(client, c):
    c.store.add_suppression(Suppression("gus@example.com", "*", "unsubscribe", c.clock.now()))
    rebound = {"Host": "attacker.example:8080"}
    assert client.get("/admin", headers=rebound).status_code == 400
    assert client.get("/api/reports", headers=rebound).status_code == 400
    assert (
        client.post(
            "/admin/suppressions/lift", data={"recipient": "gus@example.com", "scope": "*"}, headers=rebound
        ).status_code
        == 400
    )
    assert client.delete("/api/suppressions/gus@example.com?scope=*", headers=rebound).status_code == 400
    assert c.store.find_suppression("gus@example.com", "board-pack") is not None
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080"):
        assert client.get("/api/reports", headers={"Host": host}).status_code == 200, host


def test_base_url_and_allowed_hosts_extend_the_host_list(tmp_path):
    c = factories.container(tmp_path, base_url="https://herald.example.com", allowed_hosts="reports.lan,other.lan:9000")
    client = served_on_loopback(c).test_client()
    for host in ("herald.example.com", "reports.lan:8080", "other.lan"):
        assert client.get("/api/reports", headers={"Host": host}).status_code == 200, host
    assert client.get("/api/reports", headers={"Host": "evil.example"}).status_code == 400


def test_admin_posts_from_another_site_are_refused(tmp_path):
    c = factories.container(tmp_path, admin_token=TOKEN)
    client = create_app(c).test_client()
    response = client.post("/admin/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and "herald_admin" not in response.headers.get("Set-Cookie", "")


# 3. Revocable admin sessions ------------------------------------------------------------------------
def _login(client: Any, token: str = TOKEN) -> Any:
    return client.post("/admin/login", data={"token": token, "name": "Olivia"})


def _cookie(client: Any) -> str:
    cookie = client.get_cookie("herald_admin")
    assert cookie is not None
    return str(cookie.value)


def _csrf(client: Any) -> str:
    page = client.get("/admin/alerts").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


@pytest.fixture
def admin_c(tmp_path):
    c = factories.container(tmp_path, admin_token=TOKEN)
    apply_definitions(c, [factories.report()])
    return c


def _with_cookie(app: Any, value: str) -> Any:
    other = app.test_client()
    other.set_cookie("herald_admin", value)
    return other


def test_an_old_cookie_is_refused_after_logout(admin_c):
    app = create_app(admin_c)
    client = app.test_client()
    assert _login(client).status_code == 303
    copied = _cookie(client)
    assert _with_cookie(app, copied).get("/admin").status_code == 200
    assert client.post("/admin/logout", data={"csrf_token": _csrf(client)}).status_code == 303
    assert _with_cookie(app, copied).get("/admin").status_code == 302  # replayed cookie: back to login
    assert _with_cookie(app, copied).get("/admin/reports/board-pack/deliveries.csv").status_code == 401


def test_an_old_cookie_is_refused_after_the_token_is_rotated(admin_c, tmp_path):
    client = create_app(admin_c).test_client()
    assert _login(client).status_code == 303
    copied = _cookie(client)
    # Restart with a new token over the same data dir (same secret key, same store).
    rotated = factories.container(tmp_path, admin_token="the-new-token")
    app = create_app(rotated)
    assert _with_cookie(app, copied).get("/admin").status_code == 302
    fresh = app.test_client()
    assert _login(fresh, TOKEN).status_code == 401  # the old token no longer signs in
    assert _login(fresh, "the-new-token").status_code == 303


def test_sign_out_everywhere_ends_every_session(admin_c):
    app = create_app(admin_c)
    laptop, phone = app.test_client(), app.test_client()
    assert _login(laptop).status_code == 303 and _login(phone).status_code == 303
    assert phone.get("/admin").status_code == 200
    assert laptop.post("/admin/sessions/revoke-all", data={"csrf_token": _csrf(laptop)}).status_code == 303
    assert phone.get("/admin").status_code == 302 and laptop.get("/admin").status_code == 302
    # The generation survives a restart: a new app over the same store still refuses.
    phone_cookie = phone.get_cookie("herald_admin")
    assert (
        phone_cookie is None or _with_cookie(create_app(admin_c), phone_cookie.value).get("/admin").status_code == 302
    )
    again = app.test_client()
    assert _login(again).status_code == 303 and again.get("/admin").status_code == 200


def test_sign_out_everywhere_needs_the_csrf_token(admin_c):
    client = create_app(admin_c).test_client()
    assert _login(client).status_code == 303
    assert client.post("/admin/sessions/revoke-all", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/admin").status_code == 200


def test_an_idle_session_ends(admin_c):
    client = create_app(admin_c).test_client()
    assert _login(client).status_code == 303
    admin_c.clock.advance(seconds=admin_c.settings.admin_idle_seconds - 5)
    assert client.get("/admin").status_code == 200  # used: the idle clock restarts
    admin_c.clock.advance(seconds=admin_c.settings.admin_idle_seconds - 5)
    assert client.get("/admin").status_code == 200
    admin_c.clock.advance(seconds=admin_c.settings.admin_idle_seconds + 1)
    assert client.get("/admin").status_code == 302


def test_a_session_ends_at_its_maximum_age_even_when_used(tmp_path):
    c = factories.container(tmp_path, admin_token=TOKEN, admin_idle_seconds=600, admin_session_max_seconds=1000)
    client = create_app(c).test_client()
    assert _login(client).status_code == 303
    for _ in range(3):
        c.clock.advance(seconds=300)
        assert client.get("/admin").status_code == 200
    c.clock.advance(seconds=300)  # 1,200 s after sign-in
    assert client.get("/admin").status_code == 302


def test_login_attempts_are_rate_limited_per_address(admin_c):
    client = create_app(admin_c).test_client()
    limit = admin_c.settings.admin_login_max_attempts
    assert [_login(client, f"guess-{i}").status_code for i in range(limit)] == [401] * limit
    limited = _login(client)  # even the right token, while limited
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert client.get_cookie("herald_admin") is None or client.get("/admin").status_code == 302
    other = client.post("/admin/login", data={"token": TOKEN}, environ_base={"REMOTE_ADDR": "127.0.0.2"})
    assert other.status_code == 303  # another address is not limited
    admin_c.clock.advance(seconds=admin_c.settings.admin_login_window_seconds + 1)
    assert _login(client).status_code == 303


# 4. Secrets never leave ---------------------------------------------------------------------
SECRETS = ("s3cr3t-bearer", "hunter2", "key-abc123", "HOOKSECRET", "hc-uuid-secret")


def test_the_api_redacts_http_source_credentials(tmp_path):
    report = factories.report(
        source={
            "type": "http",
            "url": "https://svc:hunter2@reports.example.com/board?api_key=key-abc123&token=${env:REPORTS_TOKEN}",
            "headers": {"Authorization": "Bearer s3cr3t-bearer", "X-Api-Key": "${env:REPORTS_KEY}"},
        },
        recipients={"slack": ["https://hooks.slack.com/services/T0/B0/HOOKSECRET"]},
        heartbeat_url="https://hc-ping.com/hc-uuid-secret",
    )
    c = factories.container(tmp_path)
    apply_definitions(c, [report])
    client = served_on_loopback(c).test_client()
    for body in (
        client.get("/api/reports/board-pack").get_data(as_text=True),
        client.get("/api/reports").get_data(as_text=True),
    ):
        assert not [s for s in SECRETS if s in body], body
        assert "${env:REPORTS_TOKEN}" in body and "${env:REPORTS_KEY}" in body  # references are shown as written
    source = client.get("/api/reports/board-pack").get_json()["source"]
    assert source["url"].startswith("https://REDACTED@reports.example.com/board?")
    assert source["headers"] == {"Authorization": "REDACTED", "X-Api-Key": "${env:REPORTS_KEY}"}
    # The store keeps the definition as written: the secrets are redacted on the way out only.
    stored = c.store.get_report("board-pack").definition.source
    assert stored.headers["Authorization"] == "Bearer s3cr3t-bearer"


# 5. No 500 from bad input (the fuzz test does the rest at scale) ----------------------------------
@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/api/reports", {"headers": {"Authorization": "Bearer tökén"}}),
        ("post", "/tasks/runs/execute", {"headers": {"X-Herald-Internal": "ünïcode"}, "json": {}}),
        (
            "post",
            "/webhooks/events/erp",
            {"headers": {"X-Herald-Timestamp": "1", "X-Herald-Signature": "v1=é"}, "data": b"{}"},
        ),
        (
            "post",
            "/webhooks/events/erp",
            {"headers": {"X-Herald-Timestamp": "²", "X-Herald-Signature": "v1=ab"}, "data": b"{}"},
        ),
        ("get", "/blobs/x?expires=²&filename=a&sig=ab", {}),
        ("get", "/blobs/x?expires=1&filename=a&sig=é", {}),
        ("get", "/api/runs?limit=²", {}),
        (
            "post",
            "/webhooks/sendgrid",
            {
                "headers": {
                    "X-Twilio-Email-Event-Webhook-Signature": "é",
                    "X-Twilio-Email-Event-Webhook-Timestamp": "²",
                },
                "data": b"[]",
            },
        ),
    ],
)
def test_non_ascii_and_odd_digits_are_4xx(tmp_path, method, path, kwargs):
    c = factories.container(tmp_path, api_token="tok", event_secrets={"erp": "s"}, sendgrid_webhook_public_key="x")
    response = getattr(create_app(c).test_client(), method)(path, **kwargs)
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data(as_text=True))
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize("limit", ["²", "٣", "1e3", "-1", " 50", "99999999999999999999999"])
def test_odd_page_sizes_are_400(client, limit):
    assert client.get(f"/admin/runs?limit={limit}").status_code == 400
    assert client.get(f"/api/runs?limit={limit}").status_code == 400


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "path",
    [
        "/api/job-status",
        "/api/reports/board-pack/runs",
        "/webhooks/events/erp",
        "/webhooks/sendgrid",
        "/pubsub/job-status",
        "/tasks/runs/execute",
    ],
)
def test_json_nested_100000_deep_is_400_everywhere(client, c, internal_headers, path):
    response = client.post(path, data=DEEP, content_type="application/json", headers=internal_headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert nothing_written(c)


def test_api_bodies_over_1_mib_are_413(client, c):
    big = b'{"params": {"a": "' + b"x" * (1024 * 1024) + b'"}}'
    assert client.post("/api/reports/board-pack/runs", data=big, content_type="application/json").status_code == 413
    assert nothing_written(c)


def test_a_crash_is_a_json_500_without_a_trace(client, c, monkeypatch):
    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(c.store, "list_reports", broken)
    response = client.get("/api/reports")
    assert response.status_code == 500 and response.is_json
    assert "secret internals" not in response.get_data(as_text=True) and "Traceback" not in response.get_data(
        as_text=True
    )


# 7. Untrusted text is inert ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [{"region": "x" * 501}, {"region": "EU\r\nBcc: everyone@example.com"}, {"region": "a\x00b"}, {"bad name!": "x"}],
)
def test_run_params_are_bounded_and_line_free(client, c, params):
    response = client.post("/api/reports/board-pack/runs", json={"params": params})
    assert response.status_code == 400
    assert nothing_written(c)


def test_slack_text_from_events_and_providers_is_escaped(c):
    report = factories.report(name="P&L <weekly>")
    now = c.clock.now()
    summary = "<!channel> see <https://evil.example|Download the report> & co"
    run = seed.run("r1", now, RunStatus.DELIVERING, "2026-11", summary=summary, note="Data as of <!here>")
    d = seed.delivery(run, "C0123", DeliveryStatus.QUEUED, now, channel="slack")
    text = chat_message(report, run, d, "https://herald.example.com/l/tok", None).text
    assert "<!channel>" not in text and "<https://evil.example" not in text and "<!here>" not in text
    assert "&lt;!channel&gt;" in text and "P&amp;L &lt;weekly&gt;" in text and "&amp; co" in text
    assert text.endswith("<https://herald.example.com/l/tok|Download the report>")  # our own link stays a link
    assert mrkdwn("a & <b>") == "a &amp; &lt;b&gt;"


def test_csv_cells_that_start_a_formula_are_neutralised(tmp_path):
    c = factories.container(tmp_path, admin_token=TOKEN)
    apply_definitions(c, [factories.report()])
    now = c.clock.now()
    run = seed.run("r-csv", now, RunStatus.PARTIAL, "2026-11-02")
    c.store.create_run(run)
    reasons = ['=HYPERLINK("https://evil.example","click")', "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", "550 fine"]
    c.store.create_deliveries(
        [
            seed.delivery(run, f"u{i}@example.com", DeliveryStatus.BOUNCED, now, events={"bounce_reason": r})
            for i, r in enumerate(reasons)
        ]
    )
    client = create_app(c).test_client()
    assert _login(client).status_code == 303
    rows = list(
        csv.DictReader(
            io.StringIO(client.get("/admin/reports/board-pack/deliveries.csv?run=r-csv").get_data(as_text=True))
        )
    )
    got = {row["recipient"]: row["bounce_reason"] for row in rows}
    assert got == {f"u{i}@example.com": (r if r == "550 fine" else "'" + r) for i, r in enumerate(reasons)}


@pytest.mark.parametrize(
    "path", ["/admin/login", "/api/reports", "/healthz", "/l/" + "x" * 32, "/unsubscribe/" + "y" * 32]
)
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    if path != "/healthz":
        assert response.headers["Cache-Control"] == "no-store"


def test_herald_serve_names_no_server_version(c):
    server = make_server("127.0.0.1", 0, served_on_loopback(c), threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        response = requests.get(f"http://127.0.0.1:{server.server_port}/healthz", timeout=5)
    finally:
        server.shutdown()
        thread.join(5)
    assert response.status_code == 200
    assert response.headers["Server"] == "Herald"
    assert "Werkzeug" not in str(response.headers) and "Python" not in str(response.headers)


# Pub/Sub refusals are logged with their message id (issue 13) ------------------------------------
def test_refused_pubsub_messages_log_their_id_and_reason(client, c, internal_headers, caplog):
    import base64
    import json

    def envelope(data: Any, message_id: str) -> dict[str, Any]:
        raw = base64.b64encode(json.dumps(data).encode()).decode()
        return {"message": {"data": raw, "messageId": message_id}, "subscription": "projects/p/subscriptions/s"}

    bad_record = envelope({"job": "warehouse-etl", "period": "not a period", "status": "succeeded"}, "m-101")
    assert client.post("/pubsub/job-status", json=bad_record, headers=internal_headers).status_code == 400
    no_data = {"message": {"messageId": "m-102", "data": "!!not base64!!"}, "subscription": "s"}
    assert client.post("/pubsub/job-status", json=no_data, headers=internal_headers).status_code == 400
    refused = {r.message_id: r.getMessage() for r in caplog.records if r.getMessage().startswith("pubsub push refused")}  # type: ignore[attr-defined]
    assert set(refused) == {"m-101", "m-102"}, refused
    assert "period" in refused["m-101"]
    assert c.store.get_job_status("warehouse-etl", "not a period") is None


def test_pubsub_data_nested_too_deeply_is_dead_lettered_and_logged(client, internal_headers, caplog):
    import base64

    deep = base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    envelope = {"message": {"data": deep, "messageId": "m-deep"}, "subscription": "s"}
    assert client.post("/pubsub/job-status", json=envelope, headers=internal_headers).status_code == 400
    assert any(getattr(r, "message_id", "") == "m-deep" for r in caplog.records)


def test_a_browsers_same_origin_form_post_with_origin_null_is_accepted(tmp_path):
    # Referrer-Policy: no-referrer makes Chromium send "Origin: null" on same-origin form
    # POSTs; Sec-Fetch-Site says what they are.
    c = factories.container(tmp_path, admin_token=TOKEN)
    client = create_app(c).test_client()
    headers = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/admin/login", data={"token": TOKEN}, headers=headers).status_code == 303
    sandboxed = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
    assert create_app(c).test_client().post("/admin/login", data={"token": TOKEN}, headers=sandboxed).status_code == 403


@pytest.mark.parametrize("query", ["report_id=x", "_scheme=javascript", "_external=1", "_anchor=x", "report_id="])
def test_query_names_that_url_for_would_take_as_its_own_are_ignored(client, query):
    # Found by the fuzz test: paging links built with **request.args answered 500.
    apply_definitions(client.application.extensions["herald"], [factories.report()])
    for path in ("/admin/reports/board-pack", "/admin/runs"):
        response = client.get(f"{path}?{query}&cursor=abc")
        assert response.status_code < 500, (path, response.status_code)
