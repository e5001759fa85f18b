"""`make run-gcp`: the three Cloud Run roles under gunicorn on the emulators, as
tools/gcp_stack.py starts them, deliver the example reports end to end.

The oracles are outside Herald's own answers where they can be: the outbox files the
worker wrote, the signed URL fake-gcs-server serves the PDF from, the admin's refusal of
a request that did not come through IAP, and the operating system's process table after
Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from tools import gcp_stack
from tools.gcp_stack import Emulators, Stack

from tests.e2e.harness import wait_until
from tests.support.gcp_emulators import LOCATION, PROJECT

pytestmark = [pytest.mark.e2e, pytest.mark.emulator]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def stack(
    firestore_emulator: Any,
    tasks_emulator: str,
    gcs_emulator: str,
    pubsub_emulator: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("run-gcp")
    firestore_emulator.reset(PROJECT)
    emulators = Emulators(firestore_emulator.host, pubsub_emulator, tasks_emulator, gcs_emulator)
    try:
        started = gcp_stack.start_stack(
            project=PROJECT, location=LOCATION, log_dir=tmp / "logs", data_dir=tmp / "data", emulators=emulators
        )
    except gcp_stack.StackError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield started
    finally:
        codes = started.stop()
        firestore_emulator.reset(PROJECT)
        assert codes == {"ingress": 0, "worker": 0, "admin": 0}, codes  # graceful on SIGTERM, as on Cloud Run


def outbox(stack: Stack, kind: str) -> list[Path]:
    return sorted((stack.data_dir / "outbox" / kind).glob("*"))


def runs(stack: Stack, report_id: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{stack.url('admin')}/api/reports/{report_id}/runs", timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["runs"])


def test_the_three_roles_deliver_the_example_reports_through_cloud_tasks(stack: Stack) -> None:
    applied = stack.herald("apply", "examples/reports.yaml")  # the store-only path: no secret, no worker URL
    assert applied.returncode == 0, applied.stderr
    assert "plan: 3 added, 0 changed, 0 disabled, 0 unchanged" in applied.stdout

    status = stack.herald("status")  # store only, as apply
    assert status.returncode == 0, status.stderr
    fire = {row["report"]: row["next_fire_at"] for row in map(json.loads, status.stdout.splitlines())}
    # Cloud Scheduler's call for the minute the digest is due (the handler takes its schedule time).
    assert stack.tick(datetime.fromisoformat(fire["ops-minute-digest"])) == 200

    mails = wait_until(lambda: len(outbox(stack, "mail")) >= 2 and outbox(stack, "mail"), TIMEOUT, "two e-mails")
    wait_until(lambda: outbox(stack, "chat"), TIMEOUT, "the Slack message")
    wait_until(lambda: [r for r in runs(stack, "ops-minute-digest") if r["status"] == "succeeded"], TIMEOUT, "the run")
    assert len(mails) == 2 and len(outbox(stack, "chat")) == 1
    recipients = sorted(re.search(r"^To: (.+)$", m.read_text(), re.M).group(1) for m in mails)  # type: ignore[union-attr]
    assert recipients == ["duty-manager@example.com", "ops-team@example.com"]
    # Every task reached the worker through Google's front end, with a token Herald accepted.
    assert stack.worker_front.count("/tasks/deliveries/send", 200) == 3


def test_a_manual_run_renders_the_csv_that_was_applied_and_the_link_serves_it(stack: Stack) -> None:
    created = requests.post(f"{stack.url('admin')}/api/reports/board-pack/runs", json={}, timeout=TIMEOUT)
    assert created.status_code in (200, 201, 202), created.text
    run_id = created.json()["id"]
    wait_until(
        lambda: [r for r in runs(stack, "board-pack") if r["id"] == run_id and r["status"] == "succeeded"],
        TIMEOUT,
        "the board pack run",
    )
    mail = next(m for m in outbox(stack, "mail") if "board@example.com" in m.read_text())
    link = re.search(r"http://127\.0\.0\.1:\d+/l/[A-Za-z0-9_-]+", mail.read_text())
    assert link is not None and link.group(0).startswith(stack.url("ingress"))  # links name the ingress role
    download = requests.post(link.group(0), allow_redirects=False, timeout=TIMEOUT)
    assert download.status_code in (302, 303), download.text
    assert download.headers["Location"].startswith(stack.emulators.gcs)  # a V4 URL on the GCS emulator
    pdf = requests.get(download.headers["Location"], timeout=TIMEOUT)
    assert pdf.content.startswith(b"%PDF")


def test_admin_answers_only_requests_that_came_through_iap(stack: Stack) -> None:
    assert requests.get(f"{stack.url('admin')}/admin", timeout=TIMEOUT).status_code == 200
    direct = requests.get(f"{stack.roles['admin'].host}/admin", timeout=TIMEOUT)
    assert direct.status_code in (401, 403)
    worker = requests.post(f"{stack.roles['worker'].host}/scheduler/tick", json={}, timeout=TIMEOUT)
    assert worker.status_code == 401  # no token: nothing but Google's front end gets in


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_make_run_gcp_comes_up_and_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    """The real entry point (`python -m tools.gcp_stack`, what `make run-gcp` runs): its
    own emulators, three roles, the examples applied; SIGINT (Ctrl-C) stops every process."""
    out = tmp_path / "out.log"
    argv = [sys.executable, "-m", "tools.gcp_stack", "--no-tick", "--project", "herald-ctrl-c"]
    argv += ["--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    with out.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(
            lambda: proc.poll() is not None or "Ctrl-C stops everything." in out.read_text(), 240, "the stack to be up"
        )
        assert proc.poll() is None, out.read_text()
        assert "plan: 3 added" in out.read_text()
        pids = json.loads((tmp_path / "data" / "pids.json").read_text())
        assert {"firestore-emulator", "pubsub-emulator", "tasks-emulator", "fake-gcs-server"} <= set(pids)
        assert {"herald-worker", "herald-ingress", "herald-admin"} <= set(pids)
        assert all(_alive(pid) for pid in pids.values())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, out.read_text()
        assert "herald-worker exit 0" in out.read_text()
        left = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert left == {}, f"still running after Ctrl-C: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
