"""A 10,000-recipient run through the embedded backend with a null mailer.

Measures Herald's own overhead: fan-out, queue, claims, state writes and the task
handlers, with sending itself taking no time. Runs in a child process so its peak
memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RECIPIENTS = 10_000


def _measure(recipients: int, threads: int) -> dict[str, Any]:
    from herald.adapters.embedded.outbox import NullMailer
    from herald.adapters.embedded.sqlite_queue import QueueWorkers, SQLiteQueue
    from herald.bootstrap import build_container
    from herald.domain.reports import ReportDefinition
    from herald.services import runs
    from herald.services.scheduling import apply_definitions
    from herald.settings import Settings
    from herald.web.app import create_app
    from herald.web.dispatch import in_process_dispatcher

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), worker_threads=threads, log_level="WARNING")
        c = build_container(settings)
        c.mailer = NullMailer()
        report = ReportDefinition.model_validate(
            {
                "id": "bench",
                "name": "Bench",
                "owner": "owner@example.com",
                "source": {"type": "pdf", "data": {"columns": ["a"], "rows": [[1]]}},
                "recipients": {"email": [f"user{i:05d}@example.com" for i in range(recipients)]},
            }
        )
        apply_definitions(c, [report])
        app = create_app(c)
        assert isinstance(c.queue, SQLiteQueue)
        workers = QueueWorkers(c.queue, in_process_dispatcher(app), threads)
        started = time.perf_counter()
        run, _ = runs.start_manual_run(c, "bench")
        workers.start()
        done = threading.Event()
        while not done.wait(0.05):
            current = c.store.get_run(run.id)
            if current is not None and current.status in ("succeeded", "partial", "failed"):
                done.set()
        elapsed = time.perf_counter() - started
        workers.stop()
        counts = c.store.delivery_counts(run.id)
    return {
        "recipients": recipients,
        "worker_threads": threads,
        "wall_seconds": round(elapsed, 2),
        "deliveries_per_second": round(recipients / elapsed, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "statuses": counts,
    }


def run(recipients: int = RECIPIENTS) -> dict[str, Any]:
    results = []
    for threads in (1, 8):
        out = subprocess.run(
            [sys.executable, "-m", "bench.pipeline", str(recipients), str(threads)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(
            f"pipeline: {r['recipients']} recipients, {r['worker_threads']} worker thread(s): "
            f"{r['wall_seconds']} s, {r['deliveries_per_second']} deliveries/s, peak RSS {r['peak_rss_mib']} MiB"
        )
    return {"pipeline": results}


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(_measure(int(sys.argv[1]), int(sys.argv[2]))))
    else:
        print(json.dumps(run()))
