"""`make bench`: every benchmark module's run(), one after the other, figures to bench/results.json."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

MODULES = ["end_to_end", "pipeline", "tick", "sendgrid_adapter", "webhook", "firestore_ops", "task_creation", "admin"]


def main(selected: list[str]) -> None:
    out = Path(__file__).with_name("results.json")
    # Figures of modules not run this time are kept; each module's are written as soon as it
    # ends, and one that breaks is recorded as broken instead of losing every other figure.
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() and selected else {}
    failed = []
    for name in selected or MODULES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"({name}: no benchmark yet)")
                continue
            raise
        print(f"== {name}", flush=True)
        try:
            results[name] = module.run()
        except Exception as exc:  # reported, and the run goes on
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        out.write_text(json.dumps(results, indent=2, default=str))
    print(f"figures written to {out}")
    if failed:
        print(f"benchmarks that broke: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
