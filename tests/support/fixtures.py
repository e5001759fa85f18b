"""Pytest fixtures for the local provider servers (registered by tests/conftest.py).

- ``sendgrid_sink``: a fresh SendGrid-compatible sink per test.
- ``slack_fake``: a fresh local Slack per test.
- ``prism_url``: Prism serving SendGrid's own spec, one per session. Prism is installed
  by ``make prism`` (mk/prism.mk); when it is missing the fixture fails, never skips.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.sendgrid_sink import SendGridSink
from tests.support.slack_fake import SlackFake

REPO = Path(__file__).resolve().parents[2]
PRISM_BIN = REPO / ".tools" / "prism" / "node_modules" / ".bin" / "prism"
# SendGrid's own spec, vendored with its source and licence (tests/contract/sendgrid/README.md).
SENDGRID_SPEC = REPO / "tests" / "contract" / "sendgrid" / "tsg_mail_v3.yaml"
PRISM_START_SECONDS = 60.0
PRISM_START_ATTEMPTS = 3  # ports tried when Prism loses its port to another process


@pytest.fixture
def sendgrid_sink() -> Iterator[SendGridSink]:
    with SendGridSink() as sink:
        yield sink


@pytest.fixture
def slack_fake() -> Iterator[SlackFake]:
    with SlackFake() as fake:
        yield fake


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def prism_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    prism = Path(os.environ.get("HERALD_PRISM_BIN", PRISM_BIN))
    spec = Path(os.environ.get("HERALD_SENDGRID_SPEC", SENDGRID_SPEC))
    if not prism.exists():
        pytest.fail(f"Prism is not installed at {prism}: run `make prism` (or `make test`, which installs it)")
    if not spec.exists():
        pytest.fail(f"SendGrid's spec is missing at {spec}: restore it from git (tests/contract/sendgrid/)")
    # Prism takes its port on the command line, so another process can take it first: Prism
    # then exits (EADDRINUSE) and it is started again on another port.
    log_dir = tmp_path_factory.mktemp("prism")
    for attempt in range(1, PRISM_START_ATTEMPTS + 1):
        port = free_port()
        log_path = log_dir / f"prism.{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(prism), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            if _wait_until_answering(url, process, log_path, last=attempt == PRISM_START_ATTEMPTS):
                yield url
                return
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log_path: Path, last: bool) -> bool:
    """True once our Prism logged that it listens on ``url`` and answers; False when it
    exited because the port was taken (and this is not the last attempt)."""
    deadline = time.monotonic() + PRISM_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log_path.read_text(errors="replace")
            if "EADDRINUSE" in text and not last:
                return False
            pytest.fail(f"Prism exited with {process.returncode}:\n{text[-2000:]}")
        if f"listening on {url}" in log_path.read_text(errors="replace"):
            try:
                requests.get(url, timeout=1)  # any HTTP answer (404 for /) means it is serving
                return True
            except requests.RequestException:
                pass
        time.sleep(0.1)  # bounded wait for a server to start
    pytest.fail(f"Prism did not answer within {PRISM_START_SECONDS:.0f} s:\n{log_path.read_text(errors='replace')}")
