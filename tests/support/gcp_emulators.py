"""Session fixtures that run Google's emulators (and fake-gcs-server) on 127.0.0.1.

The launcher is tools/gcp_stack.py, the same code `make run-gcp` runs, so the two cannot
drift apart: each process starts on a free port, is ready only when its own "listening"
line is in its log and it answers, starts again on another port when its port was taken
first, and stops at the end of the session. A missing emulator FAILS the test (`make
test` installs them through mk/gcp-emulators.mk): a skipped emulator test would hide
exactly the gap it exists to catch.

Also here: ``HttpReceiver``, a local HTTP endpoint that records what it is sent, for
the Cloud Tasks dispatch and Pub/Sub push tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tools import gcp_stack
from tools.gcp_stack import NotReady, Process, StackError, free_port

__all__ = ["LOCATION", "PROJECT", "QUEUE", "QUEUE_PATH", "HttpReceiver", "free_port", "wait_until"]

PROJECT = "herald-test"
LOCATION = "europe-west1"
QUEUE = gcp_stack.TASKS_QUEUE
QUEUE_PATH = f"projects/{PROJECT}/locations/{LOCATION}/queues/{QUEUE}"


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Process | None = None) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` or if ``proc`` exits."""
    try:
        gcp_stack.poll(check, timeout, what, proc.proc if proc is not None else None)
    except NotReady as exc:
        pytest.fail(str(exc))


def _started(start: Callable[[], Process]) -> Iterator[str]:
    try:
        process = start()
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield process.host
    finally:
        process.stop()


@pytest.fixture(scope="session")
def emulator_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-logs")


@pytest.fixture(scope="session")
def pubsub_emulator(emulator_logs: Path) -> Iterator[str]:
    """host:port of Google's Pub/Sub emulator."""
    yield from _started(lambda: gcp_stack.start_pubsub(emulator_logs))


@pytest.fixture(scope="session")
def tasks_emulator(emulator_logs: Path) -> Iterator[str]:
    """host:port of gcloud-tasks-emulator with the queue QUEUE_PATH (5 retries per task)."""
    yield from _started(lambda: gcp_stack.start_tasks(emulator_logs, QUEUE_PATH, retries=5))


@pytest.fixture(scope="session")
def gcs_emulator(emulator_logs: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT of fake-gcs-server (in-memory backend)."""
    yield from _started(lambda: gcp_stack.start_gcs(emulator_logs))


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """A local HTTP endpoint on 127.0.0.1 that records every request and answers
    ``status`` (200 unless a test changes it)."""

    status: int = 200
    requests: list[Received] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver._cond:
                    headers = {key.lower(): value for key, value in self.headers.items()}  # names are case-insensitive
                    receiver.requests.append(Received(self.command, self.path, headers, body, datetime.now(UTC)))
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until ``count`` requests arrived (bounded); fail otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout=timeout):
                pytest.fail(f"receiver got {len(self.requests)} of {count} requests within {timeout} s")
            return list(self.requests)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
