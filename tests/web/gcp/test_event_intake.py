"""Pub/Sub push and the signed webhook are two doors to one intake (services/triggers):
the same event starts the same run whichever way it arrives, and only once."""

from __future__ import annotations

import pytest

from herald.domain import ids
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.adapters.gcp.test_oidc import AUDIENCE
from tests.web.gcp.conftest import PUSH_SA, SCHED_SA, TASKS_SA, bearer, envelope
from tests.web.test_events import SECRET, deal, onboarding, post

RUN_ID = ids.event_run_id("client-onboarding", "salesforce", "evt-1")


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
        event_secrets={"salesforce": SECRET},
    )
    apply_definitions(container, [onboarding()])
    return container


def push(client, signer, event, message_id="m-1"):
    return client.post(
        "/pubsub/events/salesforce", json=envelope(event, message_id=message_id), headers=bearer(signer, email=PUSH_SA)
    )


def test_a_pubsub_event_starts_the_run_the_webhook_would(client, c, signer):
    assert push(client, signer, deal()).status_code == 204
    run = c.store.get_run(RUN_ID)
    assert run is not None and run.params["client_id"] == "acc-42"
    assert run.extra_recipients == ["ceo@acme.example", "cfo@acme.example"]
    response = post(client, c, deal())  # the same event through the webhook
    assert response.status_code == 200
    assert response.get_json() == {"event_id": "evt-1", "runs": [RUN_ID], "replayed": True}
    assert [r.id for r in c.store.list_runs().items] == [RUN_ID]


def test_a_webhook_event_then_the_same_event_on_pubsub_creates_nothing_more(client, c, signer):
    assert post(client, c, deal()).get_json()["runs"] == [RUN_ID]
    assert push(client, signer, deal(), message_id="m-2").status_code == 204
    assert push(client, signer, deal(), message_id="m-2").status_code == 204  # a Pub/Sub redelivery
    assert [r.id for r in c.store.list_runs().items] == [RUN_ID]


def test_a_conflicting_event_on_pubsub_is_refused_for_the_dead_letter_topic(client, c, signer, caplog):
    push(client, signer, deal())
    other = deal(account={"id": "acc-7", "name": "Other", "region": "NA"})
    with caplog.at_level("ERROR"):
        response = push(client, signer, other, message_id="m-3")
    assert response.status_code == 400 and "pubsub push refused" in caplog.text
    assert push(client, signer, {"type": "deal.closed"}, message_id="m-4").status_code == 400  # no id


def test_a_job_status_message_is_recorded(client, c, signer):
    record = {"job": "warehouse-etl", "period": "2026-11-01", "status": "succeeded"}
    response = client.post("/pubsub/job-status", json=envelope(record), headers=bearer(signer, email=PUSH_SA))
    assert response.status_code == 204
    assert c.store.get_job_status("warehouse-etl", "2026-11-01")["via"] == "pubsub"
    bad = {"job": "warehouse-etl", "period": "yesterday", "status": "succeeded"}
    response = client.post("/pubsub/job-status", json=envelope(bad, "2"), headers=bearer(signer, email=PUSH_SA))
    assert response.status_code == 400
