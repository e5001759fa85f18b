"""gcp backend: every internal route verifies Google OIDC tokens through the real app.

Tokens are signed by a test RSA key whose certificate a local server publishes in
Google's format; the app is built by create_app with backend=gcp, so the verifiers are
the ones production wires (herald.bootstrap_gcp.internal_verifiers). A refusal has no
side effect: no run, no task, no remembered message.
"""

from __future__ import annotations

import json
import logging

import pytest

from herald.logs import JsonFormatter, trace_context
from herald.web.app import create_app
from herald.web.auth import INTERNAL_HEADER, internal_token
from tests import factories
from tests.adapters.gcp.test_oidc import AUDIENCE
from tests.web.gcp.conftest import (
    INVOKER,
    PUSH_SA,
    ROUTES,
    SCHED_SA,
    TASKS_SA,
    assert_nothing_written,
    bearer,
    family,
    post,
    unsigned,
)

REFUSALS = [
    ("no token", lambda s, path: {}, 401),
    ("not bearer", lambda s, path: {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ("garbage", lambda s, path: {"Authorization": "Bearer a.b.c"}, 401),
    ("unsigned", lambda s, path: unsigned(), 401),
    ("wrong audience", lambda s, path: bearer(s, email=INVOKER[family(path)], aud="https://other.run.app"), 401),
    ("expired", lambda s, path: bearer(s, email=INVOKER[family(path)], iat=1_000_000, exp=1_003_600), 401),
    ("wrong e-mail", lambda s, path: bearer(s, email="intruder@evil.iam.gserviceaccount.com"), 403),
    ("e-mail unverified", lambda s, path: bearer(s, email=INVOKER[family(path)], email_verified=False), 403),
    (
        "another family's invoker",
        lambda s, path: bearer(s, email=TASKS_SA if family(path) != "tasks" else PUSH_SA),
        403,
    ),
]


@pytest.mark.parametrize(("path", "body"), ROUTES)
@pytest.mark.parametrize(("case", "headers", "status"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_with_no_side_effect(client, c, signer, path, body, case, headers, status):
    response = post(client, path, body, headers(signer, path))
    assert response.status_code == status, (case, response.get_json())
    assert "Bearer" not in response.get_data(as_text=True)  # the reason is logged, not returned
    assert_nothing_written(c)


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_the_embedded_hmac_header_is_not_accepted_on_gcp(client, c, path, body):
    response = post(client, path, body, {INTERNAL_HEADER: internal_token(c.secret)})
    assert response.status_code == 401
    assert_nothing_written(c)


def test_the_schedulers_token_runs_the_tick(client, c, signer):
    headers = {**bearer(signer, email=SCHED_SA), "X-CloudScheduler-ScheduleTime": "2026-11-02T07:00:10Z"}
    response = client.post("/scheduler/tick", headers=headers)
    assert response.status_code == 200 and response.get_json()["started"] == 1
    again = client.post("/scheduler/tick", headers=headers)  # Cloud Scheduler redelivers: nothing twice
    assert again.status_code == 200 and again.get_json()["started"] == 0
    assert len(c.store.list_runs().items) == 1


def test_the_tasks_token_reaches_the_task_handler(client, signer):
    response = client.post("/tasks/runs/execute", json={"run_id": "r0"}, headers=bearer(signer, email=TASKS_SA))
    assert response.status_code == 404  # authenticated; the run does not exist


def test_unreachable_certificates_answer_503_with_retry_after(client, c, certs, signer):
    certs.status = 500
    response = client.post("/scheduler/tick", headers=bearer(signer, email=SCHED_SA))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert_nothing_written(c)


def test_gcp_without_an_audience_fails_at_start(tmp_path):
    container = factories.container(tmp_path, backend="gcp", oidc_allowed_emails=(TASKS_SA,))
    with pytest.raises(ValueError, match="HERALD_OIDC_AUDIENCE"):
        create_app(container)


def test_per_family_emails_fall_back_to_the_allowed_list(tmp_path, certs, signer):
    container = factories.container(
        tmp_path, backend="gcp", oidc_audience=AUDIENCE, oidc_allowed_emails=(TASKS_SA,), oidc_certs_url=certs.url
    )
    client = create_app(container).test_client()
    assert client.post("/scheduler/tick", headers=bearer(signer, email=TASKS_SA)).status_code == 200
    assert client.post("/scheduler/tick", headers=bearer(signer, email=PUSH_SA)).status_code == 403


# --- Route sets by role --------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "served", "absent"),
    [
        ("worker", ["/tasks/runs/execute", "/scheduler/tick", "/pubsub/events", "/pubsub/job-status"], ["/api/runs"]),
        ("ingress", ["/l/tok", "/healthz"], ["/tasks/runs/execute", "/pubsub/events", "/api/runs"]),
        ("admin", ["/api/runs", "/healthz"], ["/tasks/runs/execute", "/scheduler/tick", "/l/tok"]),
        ("all", ["/tasks/runs/execute", "/pubsub/events", "/l/tok", "/api/runs", "/healthz"], []),
    ],
)
def test_each_role_serves_its_route_set(tmp_path, certs, role, served, absent):
    from werkzeug.exceptions import MethodNotAllowed, NotFound

    container = factories.container(
        tmp_path, backend="gcp", role=role, oidc_audience=AUDIENCE, oidc_allowed_emails=(TASKS_SA,)
    )
    app = create_app(container)
    urls = app.url_map.bind("herald.test")

    def routed(path: str) -> bool:
        try:
            urls.match(path, method="POST" if path.startswith(("/tasks", "/scheduler", "/pubsub")) else "GET")
        except (NotFound, MethodNotAllowed):
            return False
        return True

    assert [p for p in served if not routed(p)] == []
    assert [p for p in absent if routed(p)] == []
    assert ("herald.oidc" in app.extensions) == (role in ("worker", "all"))


# --- Cloud Logging trace correlation ---------------------------------------------------


def test_logs_carry_the_cloud_trace_of_the_request(client, c):
    app = create_app(c)
    trace_id = "105445aa7843bc8bf206b12000100000"
    formatter = JsonFormatter("herald-test")
    with app.test_request_context("/healthz", headers={"X-Cloud-Trace-Context": f"{trace_id}/1;o=1"}):
        app.preprocess_request()
        record = logging.makeLogRecord({"msg": "hello", "levelname": "WARNING", "levelno": 30})
        line = json.loads(formatter.format(record))
        app.do_teardown_request()
    assert line["logging.googleapis.com/trace"] == f"projects/herald-test/traces/{trace_id}"
    assert line["severity"] == "WARNING"
    assert trace_context.get() is None
