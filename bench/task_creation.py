"""Cloud Tasks creation: the bounded fan-out pool against one-at-a-time, same run.

Runs against gcloud-tasks-emulator (installed by mk/gcp-emulators.mk) with its queue
paused, so only task creation is measured, not dispatch. Figures are rates over
ROUNDS alternating rounds of TASKS tasks each, reported as medians and the ratio.

Caveat, measured honestly: the emulator is a Python gRPC server with a 2-thread
executor (gcloud_tasks_emulator/server.py, ``ThreadPoolExecutor(max_workers=2)``),
so at most two creates run at once on its side and the pool's speed-up here is
bounded by that, not by Herald. Against Cloud Tasks each create is a ~20-50 ms
network round trip and the pool overlaps them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

TASKS = 1_000
ROUNDS = 3
POOL = 16
ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ROOT / ".tools" / "tasks-emulator-venv" / "bin" / "gcloud-tasks-emulator"
QUEUE = "projects/herald-bench/locations/europe-west1/queues/bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_emulator(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    if not EMULATOR.exists():
        raise RuntimeError(f"{EMULATOR} missing: run `make bench` (mk/gcp-emulators.mk installs it)")
    port = _free_port()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(EMULATOR), "start", "-p", str(port), "-q", "-r", "0", "-d", QUEUE],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    return proc, f"127.0.0.1:{port}"


def _wait_ready(client: Any, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    from google.api_core import exceptions as gexc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tasks emulator exited with {proc.returncode}")
        try:
            client.pause_queue(name=QUEUE, timeout=2)  # ready, and dispatch is off from now on
            return
        except gexc.GoogleAPICallError:
            time.sleep(0.1)  # bounded readiness poll
    raise RuntimeError(f"tasks emulator not ready after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def run(tasks: int = TASKS, rounds: int = ROUNDS, pool: int = POOL) -> dict[str, Any]:
    from herald.adapters.gcp.cloud_tasks_queue import CloudTasksQueue, build_client
    from herald.ports.queue import Task

    _, project, _, location, _, queue_id = QUEUE.split("/")
    with tempfile.TemporaryDirectory() as tmp:
        proc, host = _start_emulator(Path(tmp) / "tasks-emulator.log")
        client = build_client(host)
        try:
            _wait_ready(client, proc)
            queue = CloudTasksQueue(
                client,
                project=project,
                location=location,
                queue=queue_id,
                worker_url="http://127.0.0.1:9/unused",  # the queue is paused: nothing is dispatched
                service_account_email="herald-tasks@herald-bench.iam.gserviceaccount.com",
                pool_size=pool,
            )

            def batch(label: str) -> list[Task]:
                tag = uuid.uuid4().hex[:8]
                return [Task(f"send-{label}-{tag}-{i}", "/tasks/deliveries/send", {"i": i}) for i in range(tasks)]

            queue.enqueue_many(batch("warmup")[:50])  # channel and thread start-up outside the timing
            sequential: list[float] = []
            pooled: list[float] = []
            for round_ in range(rounds):
                order = ("sequential", "pooled") if round_ % 2 == 0 else ("pooled", "sequential")
                for mode in order:
                    work = batch(mode)
                    started = time.perf_counter()
                    if mode == "sequential":
                        created = sum(queue.enqueue(task) for task in work)
                    else:
                        created = queue.enqueue_many(work)
                    elapsed = time.perf_counter() - started
                    if created != tasks:
                        raise RuntimeError(f"{mode}: created {created} of {tasks}")
                    (sequential if mode == "sequential" else pooled).append(tasks / elapsed)
        finally:
            client.transport.close()
            _stop(proc)
    seq = statistics.median(sequential)
    par = statistics.median(pooled)
    return {
        "tasks_per_round": tasks,
        "rounds": rounds,
        "pool_size": pool,
        "sequential_tasks_per_s": round(seq, 1),
        "pooled_tasks_per_s": round(par, 1),
        "pooled_over_sequential": round(par / seq, 2),
        "sequential_rounds": [round(rate, 1) for rate in sequential],
        "pooled_rounds": [round(rate, 1) for rate in pooled],
        "note": "gcloud-tasks-emulator serves gRPC with 2 worker threads: concurrency on its side is capped at 2",
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
