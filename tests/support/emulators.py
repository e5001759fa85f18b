"""Google's Firestore emulator for the store contract suite and the benchmark.

``firestore_emulator`` (session) starts the emulator's jar directly with java on a free
port — not through ``gcloud emulators firestore start``, whose wrapper does not exec, so
killing it would leave java running — waits (bounded) until it has logged that it is
running and ``GET /`` answers ``Ok``, and kills it at the end of the session. The port is
given on the command line, so another process can take it first: java then exits with a
``BindException`` and the start is tried again on another port (START_ATTEMPTS).
``firestore_client`` (per test) is a client on a project id of its own, so tests never
see each other's documents; the project's documents are deleted afterwards.
A missing java or jar FAILS the test: a skipped emulator test would hide exactly the gap it exists to catch.

``run_firestore_emulator`` is the same start/stop as a plain context manager, for
``bench/`` which runs outside pytest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import pytest

if TYPE_CHECKING:
    from google.cloud import firestore

FIRESTORE_JAR = Path("/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar")
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
START_TIMEOUT = 60.0  # seconds; ~1 s on an idle machine, much more on a busy 2-core one
START_ATTEMPTS = 3  # ports tried before giving up
READY_LINE = "Dev App Server is now running."  # logged once it listens
_ENV_LOCK = threading.Lock()  # the client reads FIRESTORE_EMULATOR_HOST once, in its constructor


class EmulatorError(RuntimeError):
    """The emulator is not installed or did not become ready."""


@dataclass(frozen=True)
class FirestoreEmulator:
    host: str  # host:port, the value of FIRESTORE_EMULATOR_HOST
    log_path: Path

    def client(self, project: str | None = None) -> firestore.Client:
        """A client on the emulator; ``project`` defaults to a fresh unique id."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import firestore

        with _ENV_LOCK, mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": self.host}):
            return firestore.Client(
                project=project or f"herald-{uuid.uuid4().hex[:12]}", credentials=AnonymousCredentials()
            )

    def reset(self, project: str) -> None:
        """Delete every document of ``project`` (the emulator's own reset endpoint)."""
        url = f"http://{self.host}/emulator/v1/projects/{project}/databases/(default)/documents"
        request = urllib.request.Request(url, method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ok(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"Ok"
    except OSError:
        return False


@contextmanager
def run_firestore_emulator(log_dir: Path | None = None) -> Iterator[FirestoreEmulator]:
    java = shutil.which("java")
    if java is None:
        raise EmulatorError("java is not installed: the Firestore emulator needs Java 17 (google-cloud-cli)")
    if not FIRESTORE_JAR.exists():
        raise EmulatorError(f"Firestore emulator jar not found at {FIRESTORE_JAR} (install google-cloud-cli)")
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="firestore-emulator-"))
    problems: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = _free_port()
        emulator = FirestoreEmulator(f"127.0.0.1:{port}", log_dir / f"firestore-emulator.{attempt}.log")
        argv = [java, "-cp", str(FIRESTORE_JAR), FIRESTORE_MAIN, "start", "--host=127.0.0.1", f"--port={port}"]
        with emulator.log_path.open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            problem = _wait_ready(emulator, proc)
            if problem is None:
                yield emulator
                return
            problems.append(f"port {port}: {problem}")
        finally:
            _stop(proc)
    raise EmulatorError(f"Firestore emulator did not start in {START_ATTEMPTS} attempts:\n" + "\n".join(problems))


def _wait_ready(emulator: FirestoreEmulator, proc: subprocess.Popen[bytes]) -> str | None:
    """None once our own process logged that it runs and answers ``Ok``; else why not."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:  # e.g. BindException: the port was taken first
            return f"exited with {proc.returncode}:\n{emulator.log_tail()}"
        if READY_LINE in emulator.log_tail() and _answers_ok(emulator.host):
            return None
        if time.monotonic() > deadline:
            return f"not ready after {START_TIMEOUT:.0f} s:\n{emulator.log_tail()}"
        time.sleep(0.1)  # polling interval of a bounded readiness loop, not a wait for time


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # java is the session leader: its own group only
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    try:
        with run_firestore_emulator(tmp_path_factory.mktemp("firestore-emulator")) as emulator:
            yield emulator
    except EmulatorError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def firestore_client(firestore_emulator: FirestoreEmulator) -> Iterator[firestore.Client]:
    client = firestore_emulator.client()
    try:
        yield client
    finally:
        firestore_emulator.reset(client.project)
        client.close()
