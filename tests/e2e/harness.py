"""A real `herald serve` subprocess, driven over HTTP like a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERALD = Path(sys.executable).parent / "herald"


START_ATTEMPTS = 3  # ports tried when `herald serve` loses its port to another process
READY_LINE = "Herald is serving on"  # printed by `herald serve` once it has bound its port
IN_USE = "Address already in use"


def free_port() -> int:
    """A port that was free a moment ago. `herald serve` is told its port, so another
    process may take it first: ``HeraldProcess.start`` retries on another port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll a condition on another process, bounded (waiting for work, not for time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def child_processes(pid: int) -> list[int]:
    """A process's children (a `herald serve`'s worker processes), whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread (a request's, say) ended while we looked
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


class PortTaken(Exception):
    """`herald serve` could not bind the port it was given."""


class HeraldProcess:
    def __init__(
        self, data_dir: Path, reports: list[dict[str, Any]], env: dict[str, str] | None = None, port: int = 0
    ) -> None:
        self.data_dir = data_dir
        self.port_chosen = not port  # ours to change if another process takes it first
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.reports_file = data_dir / "reports.yaml"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.reports_file.write_text(yaml.safe_dump({"reports": reports}))
        self.env = {
            **os.environ,
            "HERALD_DATA_DIR": str(data_dir),
            "HERALD_PORT": str(self.port),
            "HERALD_TICK_SECONDS": "3600",  # runs are started through the API here
            "HERALD_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()

    def start(self) -> HeraldProcess:
        for _attempt in range(START_ATTEMPTS):
            log_path = self.data_dir / "serve.log"
            self._log_from = log_path.stat().st_size if log_path.exists() else 0  # this start's lines only
            log = log_path.open("ab")
            self.proc = subprocess.Popen(
                [str(HERALD), "serve", "--reports", str(self.reports_file)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until(self._healthy, 30, "herald serve to answer /healthz")
                return self
            except PortTaken:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.env["HERALD_PORT"] = str(self.port)
        raise AssertionError(f"herald serve lost its port {START_ATTEMPTS} times: {self.log_tail()}")

    def _this_start_log(self) -> str:
        path = self.data_dir / "serve.log"
        with path.open("rb") as log:
            log.seek(self._log_from)
            return log.read().decode(errors="replace")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            if self.port_chosen and IN_USE in self._this_start_log():
                raise PortTaken(self.port)
            raise AssertionError(f"herald serve exited with {self.proc.returncode}: {self.log_tail()}")
        if READY_LINE not in self._this_start_log():
            return False  # not bound yet: whatever answers on the port now is not ours
        try:
            return self.session.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log_tail(self, lines: int = 30) -> str:
        path = self.data_dir / "serve.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self) -> None:
        """kill -9: no chance to finish anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    # API helpers ---------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}/api{path}", timeout=10, **kwargs)

    def start_run(self, report_id: str, key: str = "e2e") -> str:
        response = self.api("POST", f"/reports/{report_id}/runs", json={}, headers={"Idempotency-Key": key})
        assert response.status_code in (200, 201), response.text
        return str(response.json()["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/runs/{run_id}").json()  # type: ignore[no-any-return]

    def deliveries(self, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            body = self.api("GET", f"/runs/{run_id}/deliveries", params=params).json()
            out += body["deliveries"]
            cursor = body["next_cursor"]
            if not cursor:
                return out

    def wait_for_run(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        final = {"succeeded", "partial", "failed", "missed", "skipped"}

        def finished() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run.get("status") in final else None

        return wait_until(finished, timeout, f"run {run_id} to finish")  # type: ignore[no-any-return]
