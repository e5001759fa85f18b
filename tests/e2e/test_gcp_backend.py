"""The gcp backend end to end, against Google's emulators and a real gunicorn.

Herald runs as `gunicorn -c gunicorn.conf.py` (the production entry) with
HERALD_BACKEND=gcp: Firestore emulator, gcloud-tasks-emulator, fake-gcs-server, Pub/Sub
emulator, and the local SendGrid-compatible sink. A tick (Cloud Scheduler's call, with
a valid OIDC token) makes a run; the run renders to GCS; tasks fan out through the
Cloud Tasks emulator back to Herald; the sends reach the sink and are recorded in
Firestore; run.completed is published to Pub/Sub.

OIDC and the emulators: neither the Cloud Tasks emulator nor the Pub/Sub emulator sends
an Authorization header. Herald is NOT given a bypass: it verifies every internal call
exactly as in production. Instead the tasks' worker URL (and the push endpoint) is a
small local proxy that plays Google's part: it mints the OIDC token Google would attach
(audience = the worker URL, e-mail = the caller's service account, signed by the test
key whose certificate Herald fetches) and forwards the request. What the token would
contain is checked where it is decided: the task request's oidc_token fields in the
Cloud Tasks adapter's unit tests, the subscription's push config in Terraform.

The stack is started by tools/gcp_stack.py, the launcher `make run-gcp` runs (one
gunicorn with HERALD_ROLE=all here; tests/e2e/test_run_gcp.py runs the three roles).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests
from tools import gcp_stack
from tools.gcp_stack import Emulators, Front, Issuer, invoker_emails

from herald.domain.states import DeliveryStatus, RunStatus
from herald.services.scheduling import apply_definitions
from herald.settings import Settings
from tests import factories
from tests.e2e.harness import wait_until
from tests.support.gcp_emulators import LOCATION, PROJECT
from tests.support.sendgrid_sink import SendGridSink

pytestmark = [pytest.mark.e2e, pytest.mark.emulator]

CALLER = invoker_emails(PROJECT)  # route family -> the service account Google presents
TASKS_SA, PUSH_SA, SCHED_SA = CALLER["tasks"], CALLER["pubsub"], CALLER["scheduler"]
RECIPIENTS = ["ana@example.com", "bo@example.com", "cy@example.com"]
INTERNAL_ROUTES = [
    "/tasks/runs/execute",
    "/tasks/runs/finish",
    "/tasks/deliveries/send",
    "/scheduler/tick",
    "/pubsub/events",
    "/pubsub/events/orders",
    "/pubsub/job-status",
]


@dataclass
class Stack:
    herald_url: str
    proxy: Front  # Google's front end: adds the caller's OIDC token, forwards to Herald
    sink: SendGridSink
    settings: Settings
    c: Any  # a Container on the same emulators, for the test's own reads and setup
    issuer: Issuer
    topics: dict[str, str]
    log_path: Path

    def call(self, path: str, email: str, **kwargs: Any) -> requests.Response:
        """Call Herald directly with a token for ``email`` (audience: the worker URL)."""
        headers = {"Authorization": f"Bearer {self.issuer.id_token(self.proxy.url, email)}"}
        headers.update(kwargs.pop("headers", {}))
        return requests.post(self.herald_url + path, headers=headers, timeout=30, **kwargs)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def stack(
    firestore_emulator: Any,
    tasks_emulator: str,
    gcs_emulator: str,
    pubsub_emulator: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    from herald.bootstrap import build_container
    from herald.ports.clock import SystemClock

    tmp = tmp_path_factory.mktemp("gcp-e2e")
    sink = SendGridSink().start()
    suffix = uuid.uuid4().hex[:8]
    topics = {"runs": f"herald-runs-{suffix}", "deliveries": f"herald-deliveries-{suffix}"}
    firestore_emulator.reset(PROJECT)
    try:
        started = gcp_stack.start_stack(
            project=PROJECT,
            location=LOCATION,
            log_dir=tmp / "logs",
            data_dir=tmp / "data",
            emulators=Emulators(firestore_emulator.host, pubsub_emulator, tasks_emulator, gcs_emulator),
            roles=("all",),
            topics=topics,
            bucket=f"herald-e2e-{suffix}",
            extra_env={"HERALD_SENDGRID_API_KEY": "SG.e2e", "HERALD_SENDGRID_HOST": sink.url},
        )
    except gcp_stack.StackError as exc:
        sink.stop()
        pytest.fail(str(exc), pytrace=False)
    with mock.patch.dict(os.environ, started.env["all"]):  # parsed from the environment, as gunicorn's process does
        settings = Settings()
    c = build_container(settings, SystemClock())
    process = started.roles["all"]
    built = Stack(process.host, started.worker_front, sink, settings, c, started.issuer, topics, process.log_path)
    try:
        yield built
    finally:
        codes = started.stop()  # SIGTERM, as Cloud Run sends
        sink.stop()
        with contextlib.suppress(OSError):
            firestore_emulator.reset(PROJECT)
        assert codes == {"all": 0}, f"gunicorn did not stop cleanly on SIGTERM ({codes}):\n{built.log_tail()}"


def pull_subscription(stack: Stack, key: str) -> tuple[Any, str]:
    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    subscriber = pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(stack.settings.pubsub_emulator_host))
    )
    name = f"projects/{PROJECT}/subscriptions/{stack.topics[key]}-e2e-{uuid.uuid4().hex[:6]}"
    subscriber.create_subscription(name=name, topic=f"projects/{PROJECT}/topics/{stack.topics[key]}", timeout=10)
    return subscriber, name


def pulled_events(subscriber: Any, subscription: str, want: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    events: list[dict[str, Any]] = []

    def got() -> bool:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])
            events.extend(json.loads(m.message.data) for m in response.received_messages)
        return want(events)

    wait_until(got, 30, "Herald's events on Pub/Sub")
    return events


def test_a_tick_runs_the_whole_flow_once(stack: Stack) -> None:
    from herald.adapters.gcp.gcs_blobs import build_client as build_gcs

    c = stack.c
    report = factories.report(
        id=f"gcp-e2e-{uuid.uuid4().hex[:6]}",
        schedule={"cron": "0 7 * * *", "timezone": "UTC"},
        recipients={"email": RECIPIENTS},
    )
    (stored,) = apply_definitions(c, [report])
    slot = stored.next_fire_at
    assert slot is not None
    subscriber, runs_sub = pull_subscription(stack, "runs")
    scheduled = {"X-CloudScheduler-ScheduleTime": (slot + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")}

    # Cloud Scheduler's call, with the scheduler's token; Herald uses the header's time.
    tick = stack.call("/scheduler/tick", SCHED_SA, headers=scheduled)
    assert tick.status_code == 200, tick.text
    assert tick.json()["started"] == 1

    def finished() -> Any:
        runs = c.store.list_runs(report_id=report.id).items
        return (
            runs[0] if runs and runs[0].status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED) else None
        )

    try:
        run = wait_until(finished, 90, "the run to finish through Cloud Tasks")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.log_tail()}") from None
    assert run.status == RunStatus.SUCCEEDED, (run, stack.log_tail())
    assert run.slot == slot

    # Rendered once, to GCS.
    blob = (
        build_gcs(PROJECT, stack.settings.storage_emulator_host)
        .bucket(stack.settings.gcs_bucket)
        .get_blob(run.artifact_key)
    )
    assert blob is not None and blob.download_as_bytes().startswith(b"%PDF")
    assert blob.metadata == {"run_id": run.id, "report_id": report.id}

    # One mail per recipient reached SendGrid; each delivery recorded in Firestore with its message id.
    deliveries = c.store.list_deliveries(run_id=run.id).items
    assert sorted(d.recipient for d in deliveries) == RECIPIENTS
    assert {d.status for d in deliveries} == {DeliveryStatus.SENT}
    accepted = {a.recipient: a.message_id for a in stack.sink.accepted}
    assert accepted == {d.recipient: d.provider_message_id for d in deliveries}

    # run.completed was published to Pub/Sub.
    events = pulled_events(subscriber, runs_sub, lambda evs: any(e.get("run_id") == run.id for e in evs))
    completed = [e for e in events if e.get("run_id") == run.id]
    assert completed[0]["type"] == "run.completed" and completed[0]["status"] == "succeeded"
    subscriber.delete_subscription(subscription=runs_sub)
    subscriber.close()

    # --- Duplicates create nothing twice ------------------------------------------------
    again = stack.call("/scheduler/tick", SCHED_SA, headers=scheduled)  # Cloud Scheduler redelivers the tick
    assert again.status_code == 200 and again.json()["started"] == 0
    assert len(c.store.list_runs(report_id=report.id).items) == 1

    # Cloud Tasks redelivers: the emulator accepts duplicate names, so the same tasks really
    # reach Herald again through the emulator.
    from herald.services.tasks import execute_run_task, send_task

    before = {path: stack.proxy.count(path) for path in ("/tasks/runs/execute", "/tasks/deliveries/send")}
    c.queue.enqueue(execute_run_task(run.id))
    c.queue.enqueue_many([send_task(d.id, 0) for d in deliveries])
    wait_until(
        lambda: (
            stack.proxy.count("/tasks/runs/execute") > before["/tasks/runs/execute"]
            and stack.proxy.count("/tasks/deliveries/send") >= before["/tasks/deliveries/send"] + len(deliveries)
        ),
        60,
        "the redelivered tasks to reach Herald",
    )
    assert len(stack.sink.accepted) == len(RECIPIENTS)
    assert [d.attempts for d in c.store.list_deliveries(run_id=run.id).items] == [1] * len(RECIPIENTS)
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED  # type: ignore[union-attr]
    with stack.proxy.lock:
        assert all(f.status < 500 for f in stack.proxy.seen), [(f.path, f.status) for f in stack.proxy.seen]


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("empty body", {"data": b""}),
    ("not JSON", {"data": b"{", "headers": {"Content-Type": "application/json"}}),
    ("JSON list", {"json": []}),
    ("JSON string", {"json": "x"}),
    ("wrong types", {"json": {"run_id": 5, "delivery_id": ["x"], "message": "no"}}),
    ("path-like ids", {"json": {"run_id": "../../x", "delivery_id": "../y"}}),
    ("huge id", {"json": {"run_id": "r" * 5000, "delivery_id": "d" * 5000}}),
    ("unknown ids", {"json": {"run_id": "r-unknown", "delivery_id": "d-unknown"}}),
    ("envelope without data", {"json": {"message": {"messageId": "9"}}}),
    ("envelope bad base64", {"json": {"message": {"messageId": "9", "data": "%%"}}}),
    ("bad schedule time", {"json": {}, "headers": {"X-CloudScheduler-ScheduleTime": "soon"}}),
    ("binary", {"data": bytes(range(256)), "headers": {"Content-Type": "application/octet-stream"}}),
]


def test_bad_input_to_every_internal_route_is_4xx_and_writes_nothing(stack: Stack) -> None:
    c = stack.c
    runs_before = len(c.store.list_runs(limit=500).items)
    sent_before = len(stack.sink.accepted)
    failures = []
    for path in INTERNAL_ROUTES:
        family = path.strip("/").split("/")[0]
        for case, kwargs in BAD_INPUTS:
            if path == "/scheduler/tick" and case != "bad schedule time":
                continue  # the tick takes no body: any body is ignored and the tick runs (nothing is due)
            response = stack.call(path, CALLER[family], **kwargs)
            if not 400 <= response.status_code < 500:
                failures.append((path, case, response.status_code, response.text[:200]))
        # And without credentials, and with another caller's token.
        if requests.post(stack.herald_url + path, json={}, timeout=10).status_code != 401:
            failures.append((path, "no token", "not 401"))
        other = TASKS_SA if family != "tasks" else PUSH_SA
        if stack.call(path, other, json={}).status_code != 403:
            failures.append((path, "wrong caller", "not 403"))
    assert failures == [], failures
    assert len(c.store.list_runs(limit=500).items) == runs_before
    assert len(stack.sink.accepted) == sent_before
    # No push message was remembered as handled.
    assert c.store.remember_events("pubsub:unknown", ["9"], c.clock.now()) == {"9"}


def test_a_pubsub_push_reaches_the_intake_through_the_emulator(stack: Stack) -> None:
    """A job-completion message pushed by the Pub/Sub emulator to /pubsub/job-status (the
    path Terraform's subscription uses). Handled and acknowledged once herald.services.
    triggers (another change) provides record_job_status; until then Herald answers 503
    and Pub/Sub keeps the message."""

    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    from herald.adapters.gcp.pubsub import build_publisher_client

    host = stack.settings.pubsub_emulator_host
    topic = f"projects/{PROJECT}/topics/herald-job-completions-{uuid.uuid4().hex[:6]}"
    publisher = build_publisher_client(host)
    subscriber = pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(host)))
    subscription = f"{topic.replace('/topics/', '/subscriptions/')}-push"
    try:
        publisher.create_topic(name=topic, timeout=10)
        subscriber.create_subscription(
            name=subscription, topic=topic, push_config={"push_endpoint": f"{stack.proxy.url}/pubsub/job-status"}
        )
        record = {"job": "warehouse-etl", "period": "2026-11-01", "status": "succeeded"}
        publisher.publish(topic, json.dumps(record).encode()).result(timeout=10)
        wait_until(lambda: stack.proxy.count("/pubsub/job-status") >= 1, 30, "the push to reach Herald")
        with stack.proxy.lock:
            pushed = next(f for f in stack.proxy.seen if f.path == "/pubsub/job-status")
        assert pushed.status == 204, stack.log_tail()
        # The same message again (Pub/Sub redelivers): acknowledged, nothing created twice.
        again = stack.call(
            "/pubsub/job-status", PUSH_SA, data=pushed.body, headers={"Content-Type": "application/json"}
        )
        assert again.status_code == 204
        assert stack.c.store.get_job_status("warehouse-etl", "2026-11-01") is not None
    finally:
        with contextlib.suppress(Exception):
            subscriber.delete_subscription(subscription=subscription)
        subscriber.close()
        publisher.stop()
