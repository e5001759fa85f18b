"""The README's "Performance" section from bench/results.json: ``python -m bench.readme``.

Prints markdown; the README carries the latest run's copy (replace the section by hand).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.end_to_end import table


def firestore_lines(ops: dict[str, Any]) -> list[str]:
    lines = [
        "| gcp, per delivery (Firestore emulator, real services and routes) | reads | writes "
        "| $ per 1,000 (multi-region) |",
        "|---|---|---|---|",
    ]
    variants = (("pipeline", "default"), ("pipeline_inline_event_dedup", "events de-duplicated on the delivery"))
    for key, label in variants:
        p = ops.get(key)
        if not p:
            continue
        send, events = p["send_path_per_delivery"], p["events_per_delivery"]
        lines += [
            f"| send path ({label}) | {send['reads']:.2f} | {send['writes']:.2f} "
            f"| {p['send_path_usd_per_1000']['multi_region']:.4f} |",
            f"| + 3 SendGrid events via `/webhooks/sendgrid` ({label}) | {events['reads']:.2f} "
            f"| {events['writes']:.2f} | {p['usd_per_1000_deliveries']['multi_region']:.4f} in all |",
        ]
    return lines


def section(results: dict[str, Any]) -> str:
    e2e = results["end_to_end"]
    parts = [
        "## Performance",
        "",
        f"`make bench` (not part of `make test`): {e2e['cpus']} CPUs shared with other work "
        f"(load average {e2e['load_average_1m']} at the end), every sender against the same nginx "
        "sink (Debian's `nginx-light` + echo module, `mk/bench.mk`), counted at the sink. "
        "Ratios are from the same run; absolute figures move with the machine's load.",
        "",
        table(e2e),
    ]
    ops = results.get("firestore_ops")
    if isinstance(ops, dict) and "pipeline" in ops:
        parts += ["", *firestore_lines(ops)]
    return "\n".join(parts)


if __name__ == "__main__":
    print(section(json.loads(Path(__file__).with_name("results.json").read_text())))
