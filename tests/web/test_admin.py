"""The admin pages: auth (token login, loopback, IAP JWT), CSRF, filters, pagination, CSV,
resend to failed and lifting a suppression. Flask test client against the SQLite store."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import crypt, jwt

from herald.domain.reports import Schedule
from herald.domain.states import DeliveryStatus, RunStatus
from herald.services import resend
from herald.services.scheduling import apply_definitions
from herald.web.admin_views import dst_warnings
from herald.web.app import create_app
from tests import factories
from tests.adapters.gcp.test_oidc import CertsServer
from tests.browser import seed
from tests.drive import drain
from tests.web.serving import served_on_loopback

TOKEN = "admin-token-for-tests"


def csrf(client: Any, path: str = "/admin/alerts") -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def login(client: Any, token: str = TOKEN) -> Any:
    return client.post("/admin/login", data={"token": token, "name": "Olivia Ops", "next": "/admin/alerts"})


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, admin_token=TOKEN)
    apply_definitions(container, [factories.report()])
    container.ids = seed.seed(container.store, container.clock.now())  # type: ignore[attr-defined]
    return container


@pytest.fixture
def client(c):
    return create_app(c).test_client()


@pytest.fixture
def admin(client):
    assert login(client).status_code == 303
    return client


# Auth: the embedded token login ------------------------------------------------------------
@pytest.mark.parametrize("path", ["/admin", "/admin/reports/board-pack", "/admin/runs", "/admin/alerts"])
def test_pages_redirect_to_login_without_a_session(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=")


def test_csv_and_actions_without_a_session_are_401_and_change_nothing(client, c):
    assert client.get("/admin/reports/board-pack/deliveries.csv").status_code == 401
    assert client.post(f"/admin/runs/{c.ids['run']}/resend-failed", data={"csrf_token": "x"}).status_code == 401
    assert (
        client.post("/admin/suppressions/lift", data={"recipient": "gus@example.com", "scope": "*"}).status_code == 401
    )
    assert _statuses(c, c.ids["run"])["eve@example.com"] == "failed"
    assert c.store.find_suppression("gus@example.com", "board-pack") is not None
    assert c.queue.tasks == {}


def test_wrong_token_is_refused_and_the_right_one_opens_a_session(client):
    refused = login(client, "nope")
    assert refused.status_code == 401
    assert "not right" in refused.get_data(as_text=True)
    assert client.get("/admin").status_code == 302
    ok = login(client)
    assert ok.status_code == 303 and ok.headers["Location"] == "/admin/alerts"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/admin")
    assert page.status_code == 200 and "Olivia Ops (token)" in page.get_data(as_text=True)


def test_login_only_redirects_inside_admin(client):
    response = client.post("/admin/login", data={"token": TOKEN, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/admin"


def test_sign_out_needs_csrf_and_ends_the_session(admin):
    assert admin.post("/admin/logout").status_code == 400
    assert admin.post("/admin/logout", data={"csrf_token": csrf(admin)}).status_code == 303
    assert admin.get("/admin").status_code == 302


def test_the_api_token_is_the_fallback(tmp_path):
    c = factories.container(tmp_path, api_token="api-tok")
    client = create_app(c).test_client()
    assert client.get("/admin").status_code == 302
    assert login(client, "api-tok").status_code == 303


def test_no_token_on_loopback_is_open_and_says_so(tmp_path):
    client = served_on_loopback(factories.container(tmp_path)).test_client()
    page = client.get("/admin")
    assert page.status_code == 200
    assert "No admin token is configured" in page.get_data(as_text=True)


@pytest.mark.parametrize("bound", [None, "0.0.0.0"])
def test_no_token_off_loopback_is_closed(tmp_path, bound):
    app = (
        create_app(factories.container(tmp_path))
        if bound is None
        else served_on_loopback(factories.container(tmp_path), bound)
    )
    client = app.test_client()
    assert client.get("/admin").status_code == 302
    page = client.get("/admin/login").get_data(as_text=True)
    assert "admin interface is closed" in page
    assert login(client, "").status_code == 401


# CSRF --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("token", "status"), [(None, 400), ("", 400), ("forged", 403)])
def test_actions_need_the_sessions_csrf_token(admin, c, token, status):
    data = {} if token is None else {"csrf_token": token}
    assert admin.post(f"/admin/runs/{c.ids['run']}/resend-failed", data=data).status_code == status
    lift = admin.post("/admin/suppressions/lift", data={**data, "recipient": "gus@example.com", "scope": "*"})
    assert lift.status_code == status
    assert _statuses(c, c.ids["run"])["eve@example.com"] == "failed"
    assert c.store.find_suppression("gus@example.com", "board-pack") is not None
    assert c.queue.tasks == {}


def test_a_token_from_another_session_is_refused(client, c, tmp_path):
    other = create_app(c).test_client()
    login(other)
    stolen = csrf(other)
    login(client)
    assert client.post(f"/admin/runs/{c.ids['run']}/resend-failed", data={"csrf_token": stolen}).status_code == 403


# The delivery report -------------------------------------------------------------------------
def test_the_report_shows_each_recipient_with_feedback_and_totals(admin, c):
    page = admin.get("/admin/reports/board-pack").get_data(as_text=True)
    for text in (
        "ann@example.com",
        "550 5.1.1 mailbox unknown",
        "2 / 1",
        "\u00d72",  # x2 downloads
        "gave up after 4 attempts",
        "suppressed",
    ):
        assert text in page
    assert "Resend to 2 failed" in page
    assert "50.0%" in page  # delivered of sent
    assert "2026-11-01" in page  # the older run in the totals per run


def test_filter_by_status_shows_only_those(admin, c):
    page = admin.get("/admin/reports/board-pack?status=bounced").get_data(as_text=True)
    assert set(re.findall(r'data-recipient="([^"]+)"', page)) == {"cat@example.com", "dan@example.com"}


def test_filter_by_recipient_and_by_run(admin, c):
    page = admin.get("/admin/reports/board-pack?recipient=EVE@example.com").get_data(as_text=True)
    assert re.findall(r'data-recipient="([^"]+)"', page) == ["eve@example.com"]
    old = admin.get(f"/admin/reports/board-pack?run={c.ids['old_run']}").get_data(as_text=True)
    assert set(re.findall(r'data-recipient="([^"]+)"', old)) == {"user1@example.com", "user2@example.com"}
    every = admin.get("/admin/reports/board-pack?run=all").get_data(as_text=True)
    assert len(re.findall(r"data-recipient=", every)) == 9


@pytest.mark.parametrize("query", ["status=nope", "limit=7", "run=r-unknown"])
def test_bad_filters_are_400(admin, query):
    assert admin.get(f"/admin/reports/board-pack?{query}").status_code == 400


def test_unknown_report_is_404(admin):
    assert admin.get("/admin/reports/nope").status_code == 404


def test_pages_follow_the_cursor_through_every_delivery_once(admin, c):
    run = seed.run("r-big", c.clock.now() - timedelta(minutes=5), RunStatus.SUCCEEDED, "2026-11-02b")
    c.store.create_run(run)
    at = run.created_at
    c.store.create_deliveries(
        [seed.delivery(run, f"u{i:03d}@example.com", DeliveryStatus.DELIVERED, at) for i in range(120)]
    )
    url: str | None = "/admin/reports/board-pack?run=r-big&limit=50"
    seen: list[str] = []
    pages = 0
    while url:
        page = admin.get(url).get_data(as_text=True)
        seen += re.findall(r'data-recipient="([^"]+)"', page)
        found = re.search(r'id="next-page" href="([^"]+)"', page)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert pages == 3
    assert len(seen) == 120 and sorted(seen) == [f"u{i:03d}@example.com" for i in range(120)]


def test_csv_export_streams_the_filtered_rows(admin, c):
    response = admin.get(f"/admin/reports/board-pack/deliveries.csv?run={c.ids['run']}&status=bounced")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["recipient"], r["bounce_reason"]) for r in rows] == [
        ("cat@example.com", "550 5.1.1 mailbox unknown"),
        ("dan@example.com", "552 mailbox full"),
    ]
    full = admin.get("/admin/reports/board-pack/deliveries.csv").get_data(as_text=True)
    ann = next(r for r in csv.DictReader(io.StringIO(full)) if r["recipient"] == "ann@example.com")
    assert (ann["opens_human"], ann["opens_machine"], ann["downloads"], ann["clicks"]) == ("2", "1", "2", "1")


# Resend to failed ----------------------------------------------------------------------------
def test_resend_queues_one_new_attempt_for_exactly_the_failed(admin, c):
    run_id = c.ids["run"]
    response = admin.post(
        f"/admin/runs/{run_id}/resend-failed", data={"csrf_token": csrf(admin), "next": "/admin/reports/board-pack"}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/admin/reports/board-pack"
    assert "Queued a new attempt for 2 failed deliveries." in admin.get("/admin/reports/board-pack").get_data(True)
    statuses = _statuses(c, run_id)
    assert [r for r, s in statuses.items() if s == "queued"] == ["eve@example.com", "fay@example.com"]
    assert statuses["cat@example.com"] == "bounced"
    assert len(c.queue.tasks) == 2
    eve = _delivery(c, run_id, "eve@example.com")
    assert eve.attempt_log[-1]["result"] == "resend" and eve.attempt_log[-1]["by"] == "Olivia Ops (token)"
    # The same POST again (double click, refresh): nothing is queued twice.
    admin.post(f"/admin/runs/{run_id}/resend-failed", data={"csrf_token": csrf(admin)})
    assert len(c.queue.tasks) == 2
    drain(c)
    statuses = _statuses(c, run_id)
    assert statuses["eve@example.com"] == statuses["fay@example.com"] == "sent"
    assert _delivery(c, run_id, "eve@example.com").attempts == 5
    assert len(c.mailer.sent["eve@example.com"]) == 1
    run = c.store.get_run(run_id)
    assert run.status == RunStatus.PARTIAL  # the ledger keeps the settled outcome (services/resend.py)
    page = admin.get("/admin/reports/board-pack").get_data(as_text=True)
    assert "resent by Olivia Ops (token)" in page


def test_concurrent_identical_resends_send_once(c):
    failures = resend.failed_deliveries(c, c.ids["run"])
    rid = resend.request_id(c.ids["run"], failures)
    c.store.put_inbound_event(resend.KIND, rid, {"actor": "first@example.com", "deliveries": ["x"]}, c.clock.now())
    result = resend.resend_failed(c, c.ids["run"], "second@example.com")
    assert result.repeated and result.actor == "first@example.com"
    assert c.queue.tasks == {}
    assert _statuses(c, c.ids["run"])["eve@example.com"] == "failed"


def test_a_resend_stranded_before_its_enqueue_is_queued_again(c):
    resend.resend_failed(c, c.ids["run"], "ops")
    c.queue.tasks.clear()
    c.queue.pending.clear()  # as if the process died after the queued write
    resend.resend_failed(c, c.ids["run"], "ops")
    assert len(c.queue.tasks) == 2


def test_resend_refuses_a_run_that_is_settling_or_unknown(c):
    with pytest.raises(resend.ResendRefused) as unknown:
        resend.resend_failed(c, "r-nope", "ops")
    assert unknown.value.status == 404
    c.store.update_run(c.ids["run"], status=RunStatus.DELIVERING)
    with pytest.raises(resend.ResendRefused) as settling:
        resend.resend_failed(c, c.ids["run"], "ops")
    assert settling.value.status == 409


def test_the_api_resends_too(c):
    client = served_on_loopback(c).test_client()
    first = client.post(f"/api/runs/{c.ids['run']}/resend-failed", json={})
    assert first.status_code == 202 and first.json["count"] == 2 and first.json["actor"] == "local"
    again = client.post(f"/api/runs/{c.ids['run']}/resend-failed", json={})
    assert again.status_code == 202 and again.json["count"] == 0
    assert client.post("/api/runs/r-nope/resend-failed", json={}).status_code == 404
    assert len(c.queue.tasks) == 2


# Other pages and actions -----------------------------------------------------------------------
def test_lift_a_suppression(admin, c):
    assert "gus@example.com" in admin.get("/admin/alerts").get_data(as_text=True)
    response = admin.post(
        "/admin/suppressions/lift", data={"csrf_token": csrf(admin), "recipient": "gus@example.com", "scope": "*"}
    )
    assert response.status_code == 303
    assert c.store.find_suppression("gus@example.com", "board-pack") is None


def test_runs_timeline_and_alerts_page(admin, c):
    runs = admin.get("/admin/runs").get_data(as_text=True)
    assert 'data-status="partial"' in runs and 'data-status="succeeded"' in runs
    assert "ran 2m 55s" in runs
    assert admin.get("/admin/runs?status=partial").get_data(as_text=True).count("data-status=") == 1
    assert admin.get("/admin/runs?status=bogus").status_code == 400
    alerts = admin.get("/admin/alerts").get_data(as_text=True)
    assert "SendGrid 400: invalid to address" in alerts and "Resend to 2 failed" in alerts


def test_reports_page_shows_schedule_in_both_zones_and_last_run(admin):
    page = admin.get("/admin").get_data(as_text=True)
    assert "2026-11-02 07:00 GMT" in page and "2026-11-02 07:00 UTC" in page
    assert "partial" in page


def test_dst_warnings_name_skipped_and_repeated_slots():
    notes = dst_warnings(Schedule(cron="30 1 * * *", timezone="Europe/London"), datetime(2026, 3, 1, tzinfo=UTC))
    assert len(notes) == 3  # 400 days ahead: this spring, this autumn, next spring
    assert "Sun 29 Mar 2026: clocks go forward, so 01:30 do not exist" in notes[0]
    assert "02:30 BST" in notes[0]
    assert "Sun 25 Oct 2026: clocks go back, so 01:30 happen twice" in notes[1]
    assert dst_warnings(Schedule(cron="0 7 * * *", timezone="Europe/London"), datetime(2026, 3, 1, tzinfo=UTC)) == []
    assert dst_warnings(Schedule(cron="30 1 * * *", timezone="UTC"), datetime(2026, 3, 1, tzinfo=UTC)) == []


# The gcp backend: IAP ------------------------------------------------------------------------
AUDIENCE = "/projects/123456/locations/europe-west1/services/herald-admin"


def _es256_key(kid: str) -> tuple[crypt.Signer, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return crypt.ES256Signer.from_string(private, key_id=kid), public.decode()


def iap_token(signer: crypt.Signer, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://cloud.google.com/iap",
        "aud": AUDIENCE,
        "sub": "accounts.google.com:1234",
        "email": "olivia@example.com",
        "iat": now,
        "exp": now + 600,
        **overrides,
    }
    return jwt.encode(signer, {k: v for k, v in claims.items() if v is not None}).decode()


@pytest.fixture
def iap(tmp_path):
    certs = CertsServer()
    signer, public = _es256_key("iap-1")
    certs.certs["iap-1"] = public
    c = factories.container(
        tmp_path,
        backend="gcp",
        role="admin",
        iap_audience=AUDIENCE,
        iap_certs_url=certs.url,
        gcp_project="herald-test",
    )
    apply_definitions(c, [factories.report()])
    c.ids = seed.seed(c.store, c.clock.now())  # type: ignore[attr-defined]
    yield c, create_app(c).test_client(), signer
    certs.httpd.shutdown()
    certs.httpd.server_close()


def test_iap_valid_assertion_opens_the_pages_and_names_the_actor(iap):
    c, client, signer = iap
    headers = {"x-goog-iap-jwt-assertion": iap_token(signer)}
    page = client.get("/admin/alerts", headers=headers)
    assert page.status_code == 200 and "olivia@example.com" in page.get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    response = client.post(f"/admin/runs/{c.ids['run']}/resend-failed", data={"csrf_token": token}, headers=headers)
    assert response.status_code == 303
    assert _delivery(c, c.ids["run"], "eve@example.com").attempt_log[-1]["by"] == "olivia@example.com"
    api = client.post(f"/api/runs/{c.ids['old_run']}/resend-failed", headers=headers, json={})
    assert api.status_code == 202 and api.json["actor"] == "olivia@example.com"


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "/projects/999/locations/europe-west1/services/other"},
        {"iss": "https://accounts.google.com"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        {"email": None},
    ],
    ids=["wrong-audience", "wrong-issuer", "expired", "no-email"],
)
def test_iap_bad_assertions_are_401(iap, overrides):
    _, client, signer = iap
    response = client.get("/admin", headers={"x-goog-iap-jwt-assertion": iap_token(signer, **overrides)})
    assert response.status_code == 401


def test_iap_missing_or_foreign_signature_is_401_and_there_is_no_login(iap):
    c, client, _ = iap
    assert client.get("/admin").status_code == 401
    foreign, _ = _es256_key("iap-1")
    assert client.get("/admin", headers={"x-goog-iap-jwt-assertion": iap_token(foreign)}).status_code == 401
    assert client.get("/admin/login").status_code == 404
    token = {"csrf_token": "x"}
    assert client.post(f"/admin/runs/{c.ids['run']}/resend-failed", data=token).status_code == 401
    assert _statuses(c, c.ids["run"])["eve@example.com"] == "failed"


def test_iap_without_an_audience_setting_is_closed(tmp_path):
    c = factories.container(tmp_path, backend="gcp", role="admin", gcp_project="herald-test")
    assert create_app(c).test_client().get("/admin").status_code == 503


# Helpers -------------------------------------------------------------------------------------
def _statuses(c: Any, run_id: str) -> dict[str, str]:
    return {d.recipient: str(d.status) for d in c.store.list_deliveries(run_id=run_id, limit=1000).items}


def _delivery(c: Any, run_id: str, recipient: str) -> Any:
    return c.store.list_deliveries(run_id=run_id, recipient=recipient).items[0]
