"""The JSON API: auth, validation and clear 4xx errors (never a 500 or a traceback)."""

import pytest

from herald.settings import Settings
from herald.web.app import create_app
from tests import factories
from tests.drive import drain


def test_reports_are_listed_with_upcoming_fire_times(client):
    body = client.get("/api/reports").get_json()
    (report,) = body["reports"]
    assert report["id"] == "board-pack" and len(report["upcoming"]) == 3


def test_a_manual_run_is_created_and_idempotent_with_a_key(client, c):
    first = client.post(
        "/api/reports/board-pack/runs", json={"params": {"region": "EU"}}, headers={"Idempotency-Key": "abc"}
    )
    again = client.post(
        "/api/reports/board-pack/runs", json={"params": {"region": "EU"}}, headers={"Idempotency-Key": "abc"}
    )
    assert first.status_code == 201 and again.status_code == 200
    assert first.get_json()["id"] == again.get_json()["id"]
    drain(c)
    run = client.get(f"/api/runs/{first.get_json()['id']}").get_json()
    assert run["status"] == "succeeded" and run["deliveries"] == {"sent": 2}
    deliveries = client.get(f"/api/runs/{run['id']}/deliveries").get_json()["deliveries"]
    assert {d["recipient"] for d in deliveries} == {"a@example.com", "b@example.com"}
    assert all("link_token" not in d for d in deliveries)  # capabilities never leak through the API


def test_deliveries_page_with_a_cursor(client, c):
    c.store.save_report(factories.report(recipients={"email": factories.recipients(25)}), None)
    run_id = client.post("/api/reports/board-pack/runs", json={}).get_json()["id"]
    drain(c)
    seen, cursor = [], None
    while True:
        url = f"/api/runs/{run_id}/deliveries?limit=10" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).get_json()
        seen += [d["recipient"] for d in body["deliveries"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == factories.recipients(25)


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status"),
    [
        ("post", "/api/reports/nope/runs", {"json": {}}, 404),
        ("post", "/api/reports/board-pack/runs", {"json": {"params": "x"}}, 400),
        ("post", "/api/reports/board-pack/runs", {"json": {"unknown": 1}}, 400),
        ("post", "/api/reports/board-pack/runs", {"data": "{not json", "content_type": "application/json"}, 400),
        ("post", "/api/reports/board-pack/runs", {"json": {"params": {"k": 1}}}, 400),
        ("get", "/api/runs/nope", {}, 404),
        ("get", "/api/deliveries/nope", {}, 404),
        ("get", "/api/reports/nope", {}, 404),
        ("get", "/api/runs?status=exploded", {}, 400),
        ("get", "/api/deliveries?limit=0", {}, 400),
        ("get", "/api/deliveries?limit=abc", {}, 400),
        ("get", "/api/nothing-here", {}, 404),
        ("delete", "/api/reports/board-pack", {}, 405),
    ],
)
def test_bad_requests_get_clear_json_errors(client, method, url, kwargs, status):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status
    assert response.is_json and response.get_json()["error"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_token_guards_the_api(tmp_path):
    c = factories.container(tmp_path, api_token="s3cret")
    client = create_app(c).test_client()
    assert client.get("/api/reports").status_code == 401
    assert client.get("/api/reports", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/api/reports", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_without_a_token_the_api_is_closed_off_loopback(tmp_path):
    c = factories.container(tmp_path)
    c.settings = Settings(data_dir=tmp_path, host="0.0.0.0")
    client = create_app(c).test_client()
    assert client.get("/api/reports").status_code == 401
