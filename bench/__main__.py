"""`make bench`: every benchmark module's run(), one after the other, figures to bench/results.json."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

MODULES = ["end_to_end", "pipeline", "tick", "sendgrid_adapter", "webhook", "firestore_ops", "task_creation", "admin"]


def main(selected: list[str]) -> None:
    results: dict[str, Any] = {}
    for name in selected or MODULES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"({name}: no benchmark yet)")
                continue
            raise
        print(f"== {name}", flush=True)
        results[name] = module.run()
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"figures written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
