"""Refused callers change nothing: each refusal is made with a request that *would* act if
it were let in (a due slot, a queued delivery, a pending run), and afterwards every table,
the queue and the outboxes are as they were (tests/support/oracles.snapshot).

README: "Every route authenticates its caller"; the internal routes take "OIDC (gcp) or
the in-process HMAC header (embedded)"; a missing credential is 401, a wrong one 403.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from herald.services import runs
from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from herald.web.auth import INTERNAL_HEADER, internal_token
from tests import factories
from tests.factories import T0
from tests.support.oracles import snapshot


@pytest.fixture
def world(tmp_path) -> dict[str, Any]:
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report()])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="refusals")
    runs.execute_run(c, run.id)  # rendered and fanned out: its deliveries are queued
    delivery = c.store.list_deliveries(run_id=run.id).items[0]
    pending, _ = runs.start_manual_run(c, "board-pack", request_id="still-pending")
    c.clock.set(T0 + timedelta(minutes=1, seconds=5))  # 07:00:05: the daily slot is due
    return {"c": c, "client": create_app(c).test_client(), "run": run, "delivery": delivery, "pending": pending}


def requests_that_would_act(world: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    return [
        ("/scheduler/tick", {}),
        ("/scheduler/watchdog", {}),
        ("/tasks/runs/execute", {"run_id": world["pending"].id}),
        ("/tasks/runs/finish", {"run_id": world["run"].id}),
        ("/tasks/deliveries/send", {"delivery_id": world["delivery"].id}),
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({INTERNAL_HEADER: ""}, 401),
        ({INTERNAL_HEADER: "forged"}, 403),
        ({INTERNAL_HEADER: internal_token(b"another-secret")}, 403),
    ],
)
def test_internal_routes_refuse_and_change_nothing(world, headers, status):
    c, client = world["c"], world["client"]
    before = snapshot(c)
    for path, body in requests_that_would_act(world):
        assert client.post(path, json=body, headers=headers).status_code == status, path
    assert snapshot(c) == before
    assert c.mailer.sent == {}


def test_the_same_requests_with_the_right_credential_do_act(world):
    """The control: without it the refusal test above could pass on requests that do nothing."""
    c, client = world["c"], world["client"]
    before = snapshot(c)
    headers = {INTERNAL_HEADER: internal_token(c.secret)}
    for path, body in requests_that_would_act(world):
        assert client.post(path, json=body, headers=headers).status_code < 300, path
    assert snapshot(c) != before
    assert sum(len(m) for m in c.mailer.sent.values()) == 1  # the one delivery sent
    assert any(r.trigger == "schedule" for r in c.store.list_runs().items)  # the tick started the slot
