"""One slow report never delays another: on one `herald serve`, a report whose http source
hangs runs beside a healthy one. The healthy report's runs start and finish on time; the
hung report renders one run at a time (its other runs wait their turn, holding no worker).
The time is measured on the wall clock of a real process: this is what a user sees."""

from __future__ import annotations

import time

import pytest

from tests.e2e.counting import report, sendgrid_env
from tests.e2e.harness import HeraldProcess, wait_until

pytestmark = pytest.mark.e2e


def test_a_hung_source_never_delays_a_healthy_report(tmp_path, counting):
    sink = counting("--hang-seconds", "8")
    env = sendgrid_env(sink, HERALD_WORKER_THREADS="4")
    hung = report(
        "hung", ["h@example.com"], sink, source={"type": "http", "url": f"{sink.url}/hang.pdf", "timeout_seconds": 60}
    )
    healthy = report("healthy", ["a@example.com", "b@example.com"], sink)
    herald = HeraldProcess(tmp_path / "data", [hung, healthy], env=env).start()
    delays: list[float] = []
    try:
        for key in ("h1", "h2", "h3"):  # three runs of the hung report, as three slots would start them
            herald.start_run("hung", key=key)
        wait_until(lambda: sink.counts()["hung"] >= 1, 10, "the hung source to be called")
        for n in range(3):
            started = time.monotonic()
            run_id = herald.start_run("healthy", key=f"ok{n}")
            final = herald.wait_for_run(run_id, timeout=15)
            delays.append(time.monotonic() - started)
            assert final["status"] == "succeeded", final
        counts = sink.counts()
        assert counts["hung"] == 1, "one render of the hung report at a time: the others wait, holding no worker"
        assert counts["mail"].get("a@example.com") == 3 and "h@example.com" not in counts["mail"]
    finally:
        herald.stop()
    print(f"healthy report, trigger to final beside a hung one: {', '.join(f'{d:.2f}s' for d in delays)}")
    assert max(delays) < 10
