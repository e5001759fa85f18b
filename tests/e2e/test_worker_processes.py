"""`herald serve` with HERALD_WORKER_PROCESSES=2 (README "Commands", "Performance"): its
worker process is started again when it dies, the run it was part of still reaches every
recipient once (counted at a separate sink process), and it stops with the server."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.e2e.counting import report, sendgrid_env
from tests.e2e.harness import HERALD, HeraldProcess, alive, child_processes, wait_until
from tests.factories import recipients

pytestmark = pytest.mark.e2e


def test_a_worker_process_that_dies_is_started_again_and_nothing_is_lost(tmp_path, counting):
    sink = counting()
    people = recipients(300)
    env = sendgrid_env(sink, HERALD_WORKER_PROCESSES="2", HERALD_WORKER_THREADS="4", HERALD_LEASE_SECONDS="2")
    herald = HeraldProcess(tmp_path / "data", [report("weekly", people, sink)], env=env).start()
    try:
        assert herald.proc is not None
        server = herald.proc.pid
        (first,) = wait_until(lambda: child_processes(server), 30, "the worker process to start")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not alive(first), 10, "the killed worker to exit")
        (second,) = wait_until(
            lambda: [p for p in child_processes(server) if p != first and alive(p)], 30, "a new worker process"
        )
        run = herald.wait_for_run(herald.start_run("weekly"), timeout=120)
        assert run["status"] == "succeeded"
        assert "worker process exited; starting another" in (tmp_path / "data" / "serve.log").read_text()
    finally:
        code = herald.stop()
        assert code == 0, herald.log_tail()
    mail = sink.counts()["mail"]
    assert all(mail.get(p) == 1 for p in people)  # each recipient once, whichever process sent it
    wait_until(lambda: not alive(second), 40, "the worker to stop with the server")


def test_a_worker_process_stops_on_a_burst_of_sigterms(tmp_path):
    # At stop a restarted worker gets two SIGTERMs (the server's, and the death signal of the
    # thread that started it): a handler interrupted by the second must not wait on a lock
    # the first holds. A burst makes the overlap near certain; the process must still end.
    env = {**os.environ, "HERALD_DATA_DIR": str(tmp_path / "data"), "HERALD_WORKER_THREADS": "2"}
    command = [str(HERALD), "--data-dir", str(tmp_path / "data"), "worker", "--parent", str(os.getpid())]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(os.listdir(f"/proc/{worker.pid}/task")) >= 3, 30, "the worker's threads to start")
        for _ in range(2000):
            if worker.poll() is not None:
                break
            os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(30) == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
