"""Task and scheduler routes refuse unauthenticated callers and bad bodies, with no side effect."""

import pytest

from herald.web.auth import INTERNAL_HEADER

ROUTES = ["/tasks/runs/execute", "/tasks/runs/finish", "/tasks/deliveries/send", "/scheduler/tick"]


@pytest.mark.parametrize("path", ROUTES)
def test_no_credentials_401_wrong_credentials_403(client, path, c):
    assert client.post(path, json={"run_id": "x"}).status_code == 401
    assert client.post(path, json={"run_id": "x"}, headers={INTERNAL_HEADER: "forged"}).status_code == 403
    assert c.store.list_runs().items == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tasks/runs/execute", {}),
        ("/tasks/runs/execute", {"run_id": ""}),
        ("/tasks/runs/execute", {"run_id": "../../etc"}),
        ("/tasks/runs/execute", []),
        ("/tasks/deliveries/send", {"delivery_id": 5}),
        ("/tasks/runs/finish", "nonsense"),
    ],
)
def test_malformed_task_bodies_are_400(client, internal_headers, path, body):
    response = client.post(path, json=body, headers=internal_headers)
    assert response.status_code == 400


def test_unknown_subjects_are_404(client, internal_headers):
    for path, body in [("/tasks/runs/execute", {"run_id": "r0"}), ("/tasks/deliveries/send", {"delivery_id": "d0"})]:
        assert client.post(path, json=body, headers=internal_headers).status_code == 404


def test_non_json_body_is_400(client, internal_headers):
    response = client.post("/tasks/runs/execute", data="{", content_type="application/json", headers=internal_headers)
    assert response.status_code == 400


def test_scheduler_tick_uses_the_schedule_time_header(client, internal_headers, c):
    response = client.post(
        "/scheduler/tick", headers={**internal_headers, "X-CloudScheduler-ScheduleTime": "2026-11-02T07:00:10Z"}
    )
    assert response.status_code == 200 and response.get_json()["started"] == 1
    bad = client.post("/scheduler/tick", headers={**internal_headers, "X-CloudScheduler-ScheduleTime": "yesterday"})
    assert bad.status_code == 400


def test_a_held_delivery_answers_503_with_retry_after(client, internal_headers, c):
    from herald.services import runs

    run, _ = runs.start_manual_run(c, "board-pack", request_id="x")
    runs.execute_run(c, run.id)
    d = c.store.list_deliveries(run_id=run.id).items[0]
    now = c.clock.now()
    from datetime import timedelta

    c.store.claim_delivery(d.id, now, now + timedelta(seconds=90))
    response = client.post("/tasks/deliveries/send", json={"delivery_id": d.id}, headers=internal_headers)
    assert response.status_code == 503 and int(response.headers["Retry-After"]) == 91
