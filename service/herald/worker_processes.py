"""`herald serve`'s extra worker processes (``HERALD_WORKER_PROCESSES``, issue 14).

A Python process runs Python on one core at a time, and on the embedded backend sends are
most of the work: one process sends about one core's worth. With ``worker_processes``
N > 1, `herald serve` starts N-1 `herald worker` processes on its data folder. Each runs
the tasks of the server's main pool (sends, finish steps, alerts, pings: everything but
renders) from the same queue, through the same handlers. The queue and the store are one
SQLite file, whose writers in every process take turns on its lock file (sqlite_db.py),
and every handler claims its subject before acting, so a task is done once whichever
process leases it, and a task run by two processes (a lease that ran out) still sends once.

Rendering, the tick, the watchdog and HTTP stay in the server. A worker process dies with
the server (Linux: ``PR_SET_PDEATHSIG``; elsewhere it notices within a second), so a kill -9
of the server leaves no worker behind; what it had leased comes back when the server starts
again, as the server's own leases do. One that exits on its own is logged and started again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from herald.adapters.embedded.sqlite_queue import QueueWorkers, SQLiteQueue
from herald.bootstrap import build_container
from herald.settings import Settings
from herald.web.app import create_app
from herald.web.dispatch import MAIN_POOL, in_process_dispatcher

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # the server's enqueues (a fan-out's sends) do not wake this process: it looks this often
RESTART_PAUSE_SECONDS = 5.0  # a worker process that keeps dying is started again at most this often
STOP_SECONDS = 30.0  # in-flight tasks finish and are recorded; then the process is killed
WATCH_SECONDS = 0.2  # a worker process looks this often for a stop signal or a gone server
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerProcesses:
    """The server's side: start ``count`` worker processes, restart one that dies, stop them all."""

    def __init__(self, count: int, data_dir: Path) -> None:
        self.count = count
        self.data_dir = data_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._restarts = threading.Lock()  # a restart and stop() do not interleave
        self._watcher = threading.Thread(target=self._watch, name="herald-worker-processes", daemon=True)

    def start(self) -> None:
        if self.count <= 0:
            return
        self.processes = [self._spawn() for _ in range(self.count)]
        self._watcher.start()
        log.info("worker processes started", extra={"processes": self.count, "pids": [p.pid for p in self.processes]})

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "herald.cli", "--data-dir", str(self.data_dir)]
        command += ["worker", "--parent", str(os.getpid())]
        # Our own interpreter and CLI, no shell; its log lines go where the server's go.
        return subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603

    def _watch(self) -> None:
        # A process started here has this thread as its parent thread, and PR_SET_PDEATHSIG
        # fires when that thread ends, which is when stop() sets the flag: such a process may
        # get that SIGTERM beside stop()'s own (its handler takes repeated signals).
        while not self._stopping.wait(RESTART_PAUSE_SECONDS):
            with self._restarts:
                for i, process in enumerate(self.processes):
                    code = process.poll()
                    if code is not None and not self._stopping.is_set():
                        extra = {"pid": process.pid, "exit_code": code}
                        log.error("worker process exited; starting another", extra=extra)
                        self.processes[i] = self._spawn()

    def stop(self) -> None:
        """SIGTERM: each finishes and records its in-flight tasks, then exits."""
        with self._restarts:  # a restart under way is in the list before we read it; none after
            self._stopping.set()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("worker process did not stop in time; killed", extra={"pid": process.pid})
                process.kill()
                process.wait()
        if self._watcher.is_alive():
            self._watcher.join(RESTART_PAUSE_SECONDS)


def run_worker(settings: Settings, parent: int) -> None:
    """A worker process: ``worker_threads`` threads on the main pool until SIGTERM or the server is gone."""
    _die_with(parent)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # No lock here (an Event's): a second SIGTERM (the server's, and its thread's death
        # signal) can arrive while this handler runs, and would wait on the lock it holds.
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    container = build_container(settings)
    assert isinstance(container.queue, SQLiteQueue)
    workers = QueueWorkers(
        container.queue,
        in_process_dispatcher(create_app(container)),
        settings.worker_threads,
        MAIN_POOL,
        name="worker",
        poll_seconds=POLL_SECONDS,
        resume_leases=False,  # the server is alive: its leases are its own
    )
    workers.start()
    while not stopping and os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    workers.stop(STOP_SECONDS)


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the server died before the line above took effect
        sys.exit(0)
