"""A Herald app on the gcp backend's auth, for route tests: tokens signed by a test RSA
key whose certificate a local server publishes in Google's format; create_app wires the
verifiers exactly as production does (herald.bootstrap_gcp.internal_verifiers)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth import crypt

from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from tests import factories
from tests.adapters.gcp.test_oidc import AUDIENCE, CertsServer, b64, claims, make_key, token

TASKS_SA = "herald-tasks@herald-test.iam.gserviceaccount.com"
PUSH_SA = "herald-push@herald-test.iam.gserviceaccount.com"
SCHED_SA = "herald-scheduler@herald-test.iam.gserviceaccount.com"
INVOKER = {"tasks": TASKS_SA, "pubsub": PUSH_SA, "scheduler": SCHED_SA}

ROUTES = [
    ("/tasks/runs/execute", {"run_id": "r1"}),
    ("/tasks/runs/finish", {"run_id": "r1"}),
    ("/tasks/deliveries/send", {"delivery_id": "d1"}),
    ("/scheduler/tick", None),
    ("/pubsub/events", None),
    ("/pubsub/events/orders", None),
    ("/pubsub/job-status", None),
]


def envelope(data: Any, message_id: str = "1", **attributes: str) -> dict[str, Any]:
    raw = data if isinstance(data, str) else base64.b64encode(json.dumps(data).encode()).decode()
    return {
        "message": {"data": raw, "messageId": message_id, "attributes": attributes},
        "subscription": "projects/herald-test/subscriptions/herald-business-events-push",
    }


@pytest.fixture
def certs() -> Iterator[CertsServer]:
    server = CertsServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def signer(certs: CertsServer) -> crypt.RSASigner:
    signer, pem = make_key("key-1")
    certs.certs["key-1"] = pem
    return signer


@pytest.fixture
def c(tmp_path, certs):
    container = factories.container(
        tmp_path,
        backend="gcp",
        oidc_audience=AUDIENCE,
        oidc_tasks_emails=(TASKS_SA,),
        oidc_pubsub_emails=(PUSH_SA,),
        oidc_scheduler_emails=(SCHED_SA,),
        oidc_certs_url=certs.url,
        gcp_project="herald-test",
    )
    apply_definitions(container, [factories.report()])
    return container


@pytest.fixture
def client(c):
    return create_app(c).test_client()


def bearer(signer: crypt.RSASigner, **overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(signer, **overrides)}"}


def family(path: str) -> str:
    return path.strip("/").split("/")[0]


def post(client, path: str, body: Any, headers: dict[str, str]):
    if body is None:
        body = envelope({"type": "x", "source": "orders", "job": "etl"})
    return client.post(path, json=body, headers=headers)


def assert_nothing_written(c) -> None:
    assert c.store.list_runs().items == []
    assert c.queue.tasks == {}
    # A remembered push message would make its redelivery look handled.
    kind = "pubsub:projects/herald-test/subscriptions/herald-business-events-push"
    assert c.store.remember_events(kind, ["1"], c.clock.now()) == {"1"}


def unsigned() -> dict[str, str]:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return {"Authorization": f"Bearer {header}.{b64(json.dumps(claims()).encode())}."}
