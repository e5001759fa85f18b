"""The task queue port on Cloud Tasks: HTTP tasks with an OIDC token.

Each task is an HTTP POST of a JSON body to ``worker_url + task.path``; Cloud Tasks
signs an OIDC token for ``service_account_email`` with the configured audience, which
the worker verifies (herald.adapters.gcp.oidc). Task names are deterministic, so a
redelivered fan-out asks for the same names again and Cloud Tasks answers
ALREADY_EXISTS: a normal, logged outcome that returns False.
https://cloud.google.com/tasks/docs/reference/rpc/google.cloud.tasks.v2#createtaskrequest

``schedule_time`` carries Herald's own retry schedule (2 / 8 / 32 min, ARCHITECTURE.md
decision 4): the queue's retry config is only the crash safety net.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, timestamp_pb2

from herald.ports.queue import Task

if TYPE_CHECKING:
    from herald.settings import Settings

log = logging.getLogger(__name__)

# Cloud Tasks task ids: letters, digits, hyphens, underscores, at most 500 characters.
_VALID_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")

# Errors worth another attempt: the service is briefly unavailable, overloaded or slow.
# Anything else (InvalidArgument, PermissionDenied, NotFound queue, ...) will not improve.
TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ResourceExhausted)


class TaskQueueError(Exception):
    """Tasks could not be created. ``permanent`` says whether retrying can help;
    ``created`` counts the tasks of the same call that were created before the failure."""

    def __init__(self, message: str, *, permanent: bool, created: int = 0) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.created = created


def task_id(name: str) -> str:
    """The Cloud Tasks id for a port task name: the name itself when Cloud Tasks accepts
    it, else a stable hash of it (names are derived ids, so collisions do not happen)."""
    if _VALID_TASK_ID.match(name):
        return name
    return "h-" + hashlib.sha256(name.encode()).hexdigest()


def build_client(emulator_host: str = "") -> tasks_v2.CloudTasksClient:
    """A Cloud Tasks client; with an emulator host, a plain-gRPC one (the client library
    reads no emulator variable for Cloud Tasks)."""
    if emulator_host:
        import grpc
        from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

        channel = grpc.insecure_channel(emulator_host)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    return tasks_v2.CloudTasksClient()


def send_queue_ids(settings: Settings) -> list[str]:
    """The queue ids sends go to: one, or ``<tasks_send_queue>-0 .. -N-1`` (terraform/modules/herald/tasks.tf)."""
    base = settings.tasks_send_queue or settings.tasks_queue
    if settings.tasks_send_shards <= 1:
        return [base]
    return [f"{base}-{i}" for i in range(settings.tasks_send_shards)]


def routes_from_settings(settings: Settings) -> dict[str, list[str]]:
    """Run steps stay on ``tasks_queue``; sends and notifications get their own queues (issue 14)."""
    from herald.services.tasks import SEND_DELIVERY, SEND_NOTIFICATION

    return {
        SEND_DELIVERY: send_queue_ids(settings),
        SEND_NOTIFICATION: [settings.tasks_notify_queue or settings.tasks_queue],
    }


class CloudTasksQueue:
    def __init__(
        self,
        client: Any,
        *,
        project: str,
        location: str,
        queue: str,
        worker_url: str,
        service_account_email: str,
        audience: str = "",
        dispatch_deadline: timedelta = timedelta(minutes=10),
        pool_size: int = 16,
        timeout: float = 10.0,
        retry_deadline: float = 30.0,
        routes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not worker_url:
            raise ValueError("worker_url is required: tasks POST to worker_url + task.path")
        self.client = client
        self.parent = f"projects/{project}/locations/{location}/queues"
        self.queue_path = f"{self.parent}/{queue}"
        # Task path -> the queue(s) it goes to; more than one = shards, chosen by a stable hash of
        # the task's name, so a redelivered fan-out asks the same queue for the same name (and
        # Cloud Tasks' de-duplication, which is per queue, still holds). Other paths: ``queue``.
        self.routes = {
            path: [f"{self.parent}/{q}" for q in queues] for path, queues in (routes or {}).items() if queues
        }
        self.worker_url = worker_url.rstrip("/")
        self.service_account_email = service_account_email
        self.audience = audience or self.worker_url
        self.dispatch_deadline = dispatch_deadline
        self.pool_size = max(1, pool_size)
        self.timeout = timeout
        self.retry = gretry.Retry(
            predicate=gretry.if_exception_type(*TRANSIENT),
            initial=0.2,
            maximum=5.0,
            multiplier=2.0,
            timeout=retry_deadline,
        )
        if not service_account_email:
            log.warning("Cloud Tasks queue without a service account: tasks carry no OIDC token")

    @classmethod
    def from_settings(cls, settings: Settings, client: Any = None) -> CloudTasksQueue:
        return cls(
            client if client is not None else build_client(settings.tasks_emulator_host),
            project=settings.gcp_project,
            location=settings.gcp_location,
            queue=settings.tasks_queue,
            worker_url=settings.tasks_worker_url,
            service_account_email=settings.tasks_service_account,
            audience=settings.tasks_oidc_audience,
            dispatch_deadline=timedelta(seconds=settings.tasks_dispatch_deadline_seconds),
            pool_size=settings.tasks_fanout_pool,
            timeout=settings.gcp_call_timeout_seconds,
            retry_deadline=settings.gcp_retry_deadline_seconds,
            routes=routes_from_settings(settings),
        )

    def queue_for(self, task: Task) -> str:
        """The full name of the queue ``task`` goes to (pure)."""
        queues = self.routes.get(task.path)
        if not queues:
            return self.queue_path
        if len(queues) == 1:
            return queues[0]
        shard = int.from_bytes(hashlib.sha256(task.name.encode()).digest()[:8], "big") % len(queues)
        return queues[shard]

    def build_task(self, task: Task) -> tasks_v2.Task:
        """The Cloud Tasks task for a port task (pure: no call is made)."""
        if not task.path.startswith("/"):
            raise ValueError(f"task path must start with '/': {task.path!r}")
        http_request = tasks_v2.HttpRequest(
            http_method=tasks_v2.HttpMethod.POST,
            url=self.worker_url + task.path,
            headers={"Content-Type": "application/json"},
            body=json.dumps(task.payload, separators=(",", ":")).encode(),
        )
        if self.service_account_email:
            http_request.oidc_token = tasks_v2.OidcToken(
                service_account_email=self.service_account_email, audience=self.audience
            )
        deadline = duration_pb2.Duration()
        deadline.FromTimedelta(self.dispatch_deadline)
        built = tasks_v2.Task(
            name=f"{self.queue_for(task)}/tasks/{task_id(task.name)}",
            http_request=http_request,
            dispatch_deadline=deadline,
        )
        if task.eta is not None:
            if task.eta.tzinfo is None:
                raise ValueError("task eta must be timezone-aware")
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(task.eta)
            built.schedule_time = stamp
        return built

    def enqueue(self, task: Task) -> bool:
        built = self.build_task(task)
        try:
            self.client.create_task(
                request=tasks_v2.CreateTaskRequest(parent=built.name.rsplit("/tasks/", 1)[0], task=built),
                retry=self.retry,
                timeout=self.timeout,
            )
        except gexc.AlreadyExists:
            # Also what a retried create whose first attempt did land answers: either way
            # the task exists once, which is all that matters.
            log.info("task %s already exists; not created again", built.name)
            return False
        except gexc.RetryError as exc:
            raise TaskQueueError(f"creating task {built.name} kept failing: {exc}", permanent=False) from exc
        except TRANSIENT as exc:
            raise TaskQueueError(f"creating task {built.name}: {exc}", permanent=False) from exc
        except gexc.GoogleAPICallError as exc:
            raise TaskQueueError(f"creating task {built.name}: {exc}", permanent=True) from exc
        log.debug("task %s created", built.name)
        return True

    def enqueue_many(self, tasks: Sequence[Task]) -> int:
        """Create all tasks concurrently (bounded pool); one failure does not stop the
        others. Returns how many were new; raises TaskQueueError after all were tried
        if any failed."""
        if not tasks:
            return 0
        workers = min(self.pool_size, len(tasks))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloud-tasks") as pool:
            futures = [pool.submit(self.enqueue, task) for task in tasks]
        created = 0
        errors: list[TaskQueueError] = []
        for future in futures:
            exc = future.exception()
            if exc is None:
                created += int(future.result())
            elif isinstance(exc, TaskQueueError):
                errors.append(exc)
            else:
                raise exc
        if errors:
            raise TaskQueueError(
                f"{len(errors)} of {len(tasks)} tasks not created; first: {errors[0]}",
                permanent=all(error.permanent for error in errors),
                created=created,
            ) from errors[0]
        return created
