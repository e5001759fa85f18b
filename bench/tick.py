"""The tick's cost grows with due work, not with the number of schedules.

1,000 vs 100,000 stored schedules, of which 100 fire every minute; the tick runs at
five successive minutes and the median is reported with the ratio of the two sizes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DUE = 100
T0 = datetime(2026, 11, 2, 6, 59, 30, tzinfo=UTC)


def _definition(i: int, due: bool) -> Any:
    from herald.domain.reports import ReportDefinition

    return ReportDefinition.model_validate(
        {
            "id": f"r{i:06d}",
            "name": f"Report {i}",
            "owner": "owner@example.com",
            "schedule": {"cron": "* * * * *" if due else "0 6 1 1 *", "timezone": "Europe/London"},
            "source": {"type": "pdf"},
            "recipients": {"email": ["a@example.com"]},
        }
    )


def _tick_times(total: int) -> list[float]:
    from herald.bootstrap import build_container
    from herald.domain.schedules import next_fire_time
    from herald.ports.clock import FakeClock
    from herald.services.scheduling import tick
    from herald.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock(T0)
        c = build_container(Settings(data_dir=Path(tmp), log_level="WARNING"), clock=clock)
        template_due, template_idle = _definition(0, True), _definition(0, False)
        for i in range(total):
            base = template_due if i < DUE else template_idle
            report = base.model_copy(update={"id": f"r{i:06d}"})
            assert report.schedule is not None
            c.store.save_report(report, next_fire_time(report.schedule, T0))
        times = []
        for minute in range(1, 6):
            now = T0 + timedelta(minutes=minute)
            started = time.perf_counter()
            result = tick(c, now)
            times.append(time.perf_counter() - started)
            assert len(result.started) == DUE, result
        return times


def run() -> dict[str, Any]:
    small = statistics.median(_tick_times(1_000))
    large = statistics.median(_tick_times(100_000))
    ratio = large / small
    print(
        f"tick: {DUE} due of 1,000 schedules: {small * 1000:.1f} ms; of 100,000: {large * 1000:.1f} ms; "
        f"ratio {ratio:.2f} (O(due) means near 1)"
    )
    return {
        "tick": {
            "due": DUE,
            "ms_1k": round(small * 1000, 1),
            "ms_100k": round(large * 1000, 1),
            "ratio": round(ratio, 2),
        }
    }


if __name__ == "__main__":
    run()
