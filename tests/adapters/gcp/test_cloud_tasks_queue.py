"""Cloud Tasks queue: the request objects (unit) and the dispatch path (emulator).

gcloud-tasks-emulator neither rejects duplicate names nor sends OIDC tokens, so names,
de-duplication, OIDC fields, schedule_time and the dispatch deadline are checked on the
requests the adapter builds; the emulator proves the task reaches the worker URL with
its JSON body and headers.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from herald.adapters.gcp.cloud_tasks_queue import CloudTasksQueue, TaskQueueError, build_client, task_id
from herald.ports.queue import Task
from herald.settings import load_settings
from tests.support.gcp_emulators import LOCATION, PROJECT, QUEUE, QUEUE_PATH, HttpReceiver

SA = "herald-tasks@herald-test.iam.gserviceaccount.com"


class FakeTasksClient:
    """Records create_task requests; answers ALREADY_EXISTS for a name seen before, like
    Cloud Tasks. ``failures`` maps a task id to the errors to raise, in order."""

    def __init__(self) -> None:
        self.requests: list[tasks_v2.CreateTaskRequest] = []
        self.calls: list[dict[str, Any]] = []
        self.names: set[str] = set()
        self.failures: dict[str, list[Exception]] = {}
        self._lock = threading.Lock()

    def create_task(self, request: tasks_v2.CreateTaskRequest, retry: Any = None, timeout: float | None = None) -> Any:
        # Like the generated client: the retry object wraps the RPC.
        rpc = retry(self._rpc) if retry is not None else self._rpc
        return rpc(request, retry, timeout)

    def _rpc(self, request: tasks_v2.CreateTaskRequest, retry: Any, timeout: float | None) -> Any:
        with self._lock:
            self.calls.append({"retry": retry, "timeout": timeout})
            pending = self.failures.get(request.task.name.rsplit("/", 1)[-1])
            if pending:
                raise pending.pop(0)
            self.requests.append(request)
            if request.task.name in self.names:
                raise gexc.AlreadyExists("task exists")
            self.names.add(request.task.name)
            return request.task


def make_queue(client: Any, **overrides: Any) -> CloudTasksQueue:
    options: dict[str, Any] = {
        "project": PROJECT,
        "location": LOCATION,
        "queue": QUEUE,
        "worker_url": "https://worker.example.run.app/",
        "service_account_email": SA,
        "audience": "https://worker.example.run.app",
        "dispatch_deadline": timedelta(minutes=5),
        "pool_size": 4,
        "timeout": 7.5,
        "retry_deadline": 2.0,
    }
    options.update(overrides)
    return CloudTasksQueue(client, **options)


def test_request_carries_name_url_json_body_oidc_and_deadline() -> None:
    client = FakeTasksClient()
    queue = make_queue(client)

    assert queue.enqueue(Task("send-abc123", "/tasks/deliveries/send", {"delivery_id": "d1", "n": 2})) is True

    (request,) = client.requests
    assert request.parent == QUEUE_PATH
    task = request.task
    assert task.name == f"{QUEUE_PATH}/tasks/send-abc123"
    http = task.http_request
    assert http.http_method == tasks_v2.HttpMethod.POST
    assert http.url == "https://worker.example.run.app/tasks/deliveries/send"
    assert http.headers["Content-Type"] == "application/json"
    assert json.loads(http.body) == {"delivery_id": "d1", "n": 2}
    assert http.oidc_token.service_account_email == SA
    assert http.oidc_token.audience == "https://worker.example.run.app"
    assert task.dispatch_deadline == timedelta(minutes=5)
    assert "schedule_time" not in task  # as soon as possible
    assert client.calls[0]["timeout"] == 7.5
    assert client.calls[0]["retry"] is not None


def test_eta_becomes_schedule_time() -> None:
    client = FakeTasksClient()
    eta = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    make_queue(client).enqueue(Task("send-1", "/tasks/x", {}, eta=eta))
    assert client.requests[0].task.schedule_time == eta


def test_naive_eta_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_queue(FakeTasksClient()).build_task(Task("t", "/tasks/x", {}, eta=datetime(2030, 1, 1)))


def test_audience_defaults_to_worker_url() -> None:
    task = make_queue(FakeTasksClient(), audience="").build_task(Task("t", "/tasks/x"))
    assert task.http_request.oidc_token.audience == "https://worker.example.run.app"


def test_names_are_deterministic_and_invalid_ones_hashed() -> None:
    assert task_id("send-0123abcd_x") == "send-0123abcd_x"
    hashed = task_id("run/with spaces:1")
    assert hashed == task_id("run/with spaces:1")
    assert hashed.startswith("h-") and len(hashed) == 66
    assert task_id("x" * 501) != task_id("x" * 502)


def test_existing_name_is_a_normal_false() -> None:
    client = FakeTasksClient()
    queue = make_queue(client)
    task = Task("send-dup", "/tasks/x", {"a": 1})
    assert queue.enqueue(task) is True
    assert queue.enqueue(task) is False
    assert len(client.names) == 1


def test_transient_errors_are_retried_then_succeed() -> None:
    client = FakeTasksClient()
    client.failures["send-flaky"] = [gexc.ServiceUnavailable("blip"), gexc.DeadlineExceeded("slow")]
    assert make_queue(client).enqueue(Task("send-flaky", "/tasks/x")) is True
    assert len(client.calls) == 3


def test_transient_errors_past_the_deadline_are_a_transient_error() -> None:
    client = FakeTasksClient()
    client.failures["send-down"] = [gexc.ResourceExhausted("quota")] * 1000
    with pytest.raises(TaskQueueError) as caught:
        make_queue(client, retry_deadline=0.5).enqueue(Task("send-down", "/tasks/x"))
    assert caught.value.permanent is False


def test_other_errors_are_raised_at_once_as_permanent() -> None:
    client = FakeTasksClient()
    client.failures["send-bad"] = [gexc.PermissionDenied("no")]
    with pytest.raises(TaskQueueError) as caught:
        make_queue(client).enqueue(Task("send-bad", "/tasks/x"))
    assert caught.value.permanent is True
    assert len(client.calls) == 1


def test_enqueue_many_counts_new_tasks_and_dedups() -> None:
    client = FakeTasksClient()
    queue = make_queue(client)
    tasks = [Task(f"send-{i}", "/tasks/x", {"i": i}) for i in range(20)]
    assert queue.enqueue_many(tasks) == 20
    assert queue.enqueue_many([*tasks[:5], Task("send-new", "/tasks/x")]) == 1
    assert queue.enqueue_many([]) == 0


def test_enqueue_many_tries_every_task_before_raising() -> None:
    client = FakeTasksClient()
    client.failures["send-3"] = [gexc.InvalidArgument("bad")]
    tasks = [Task(f"send-{i}", "/tasks/x") for i in range(8)]
    with pytest.raises(TaskQueueError) as caught:
        make_queue(client).enqueue_many(tasks)
    assert caught.value.created == 7
    assert caught.value.permanent is True
    assert len(client.names) == 7


def test_enqueue_many_is_concurrent_within_the_pool_size() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(3, timeout=10)

    class SlowClient(FakeTasksClient):
        def create_task(self, request: Any, retry: Any = None, timeout: float | None = None) -> Any:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            try:
                if request.task.name.endswith(("send-0", "send-1", "send-2")):
                    gate.wait()  # proves three creates were in flight at once
                return super()._rpc(request, retry, timeout)
            finally:
                with lock:
                    active -= 1

    queue = make_queue(SlowClient(), pool_size=3)
    assert queue.enqueue_many([Task(f"send-{i}", "/tasks/x") for i in range(12)]) == 12
    assert peak == 3


def test_from_settings() -> None:
    settings = load_settings(
        gcp_project="p",
        gcp_location="l",
        tasks_queue="q",
        tasks_worker_url="https://w",
        tasks_service_account=SA,
        tasks_dispatch_deadline_seconds=900,
        tasks_fanout_pool=5,
    )
    queue = CloudTasksQueue.from_settings(settings, client=FakeTasksClient())
    assert queue.queue_path == "projects/p/locations/l/queues/q"
    assert queue.dispatch_deadline == timedelta(minutes=15)
    assert queue.pool_size == 5
    assert queue.audience == "https://w"
    with pytest.raises(ValueError):
        load_settings(tasks_dispatch_deadline_seconds=5)


def test_run_steps_sends_and_notifications_go_to_their_own_queues() -> None:
    """Issue 14: a large fan-out never queues in front of another report's run steps, and
    sends spread over N shards by a stable hash of the task name (a redelivered fan-out asks
    the same queue for the same name, so Cloud Tasks' per-queue de-duplication holds)."""
    settings = load_settings(
        gcp_project="p",
        gcp_location="l",
        tasks_queue="runs",
        tasks_worker_url="https://w",
        tasks_send_queue="sends",
        tasks_send_shards=4,
        tasks_notify_queue="notify",
    )
    client = FakeTasksClient()
    queue = CloudTasksQueue.from_settings(settings, client=client)
    base = "projects/p/locations/l/queues/"
    assert queue.queue_for(Task("run-1", "/tasks/runs/execute")) == base + "runs"
    assert queue.queue_for(Task("finish-1", "/tasks/runs/finish")) == base + "runs"
    assert queue.queue_for(Task("n-1", "/tasks/notifications/send")) == base + "notify"
    shards = {queue.queue_for(Task(f"send-{i}", "/tasks/deliveries/send")) for i in range(200)}
    assert shards == {f"{base}sends-{i}" for i in range(4)}
    again = [queue.queue_for(Task(f"send-{i}", "/tasks/deliveries/send")) for i in range(20)]
    assert again == [queue.queue_for(Task(f"send-{i}", "/tasks/deliveries/send")) for i in range(20)]
    assert queue.enqueue(Task("send-7", "/tasks/deliveries/send"))
    (request,) = client.requests
    assert request.parent == queue.queue_for(Task("send-7", "/tasks/deliveries/send"))
    assert request.task.name.startswith(request.parent + "/tasks/")


def test_one_queue_for_all_by_default() -> None:
    settings = load_settings(gcp_project="p", gcp_location="l", tasks_queue="q", tasks_worker_url="https://w")
    queue = CloudTasksQueue.from_settings(settings, client=FakeTasksClient())
    for path in ("/tasks/runs/execute", "/tasks/deliveries/send", "/tasks/notifications/send"):
        assert queue.queue_for(Task("t", path)) == "projects/p/locations/l/queues/q"
    with pytest.raises(ValueError):
        load_settings(tasks_send_shards=0)


@pytest.mark.emulator
def test_task_is_dispatched_to_the_worker_with_json_body_and_headers(
    tasks_emulator: str, http_receiver: HttpReceiver
) -> None:
    client = build_client(tasks_emulator)
    queue = make_queue(client, worker_url=http_receiver.url)
    try:
        assert queue.enqueue(Task("send-emu-1", "/tasks/deliveries/send", {"delivery_id": "d-emu", "attempt": 0}))
        (received,) = http_receiver.wait_for(1)
    finally:
        client.transport.close()

    assert received.method == "POST"
    assert received.path == "/tasks/deliveries/send"
    assert received.json() == {"delivery_id": "d-emu", "attempt": 0}
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-cloudtasks-taskname"] == "send-emu-1"
    assert received.headers["x-cloudtasks-queuename"] == QUEUE_PATH


@pytest.mark.emulator
def test_eta_holds_the_task_back_until_its_schedule_time(tasks_emulator: str, http_receiver: HttpReceiver) -> None:
    client = build_client(tasks_emulator)
    queue = make_queue(client, worker_url=http_receiver.url)
    eta = datetime.now(UTC) + timedelta(seconds=1.5)
    try:
        assert queue.enqueue(Task("send-emu-eta", "/tasks/deliveries/send", {"late": True}, eta=eta))
        (received,) = http_receiver.wait_for(1)
    finally:
        client.transport.close()
    assert received.json() == {"late": True}
    assert received.received_at >= eta


@pytest.mark.emulator
def test_enqueue_many_through_the_emulator_reaches_the_worker(tasks_emulator: str, http_receiver: HttpReceiver) -> None:
    client = build_client(tasks_emulator)
    queue = make_queue(client, worker_url=http_receiver.url)
    try:
        tasks = [Task(f"send-many-{i}", "/tasks/deliveries/send", {"i": i}) for i in range(10)]
        assert queue.enqueue_many(tasks) == 10
        received = http_receiver.wait_for(10)
    finally:
        client.transport.close()
    assert sorted(r.json()["i"] for r in received) == list(range(10))  # type: ignore[index]
