"""The README's "Performance" section from bench/results.json: ``python -m bench.readme``.

Prints markdown; the README carries the latest run's copy (replace the section by hand).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.end_to_end import table


def firestore_lines(ops: dict[str, Any]) -> list[str]:
    p = ops["pipeline"]
    h = p["headline"]
    cost, all_in = h["usd_per_1000_deliveries"], h["usd_per_1000_deliveries_all_in"]

    def usd(costs: dict[str, float]) -> str:
        return f"{costs['multi_region']:.4f} / {costs['regional_us_west1']:.4f}"

    def row(label: str, counts: dict[str, float], firestore: str = "", everything: str = "") -> str:
        return f"| {label} | {counts['reads']:.2f} | {counts['writes']:.2f} | {firestore} | {everything} |"

    return [
        "| gcp (Firestore emulator, real services and routes) | reads | writes "
        "| $ per 1,000 deliveries, Firestore (multi-region / regional) "
        "| $ per 1,000, + Cloud Tasks and Cloud Run requests |",
        "|---|---|---|---|---|",
        row("one send task (claim, send, outcome)", h["per_send_task"]),
        row(
            "send path per delivery (with tick, render, fan-out, finish)",
            h["per_delivery_including_fan_out"],
            usd(cost["send_path"]),
            usd(all_in["send_path"]),
        ),
        row(
            "+ 3 SendGrid events via `/webhooks/sendgrid`, per delivery",
            h["events_per_delivery"],
            usd(cost["total"]) + " in all",
            usd(all_in["total"]) + " in all",
        ),
    ]


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
