"""The counting sink process and the helpers that point a `herald serve` at it
(tests/support/counting_sink.py is the process; this is how the e2e tests drive it)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import requests

from tests.e2e.harness import ROOT

OWNER = "owner@example.com"


class CountingSink:
    """The counting process: started with ``python -m``, it binds its own port and says which."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.counting_sink", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def counts(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/__counts", timeout=5).json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def sendgrid_env(sink: CountingSink, **more: str) -> dict[str, str]:
    return {
        "HERALD_SENDGRID_API_KEY": "SG.e2e",
        "HERALD_SENDGRID_HOST": sink.url,
        "HERALD_ALLOW_PRIVATE_TARGETS": "true",  # the sink, source and monitor are on loopback
        **more,
    }


def report(report_id: str, emails: list[str], sink: CountingSink, **extra: Any) -> dict[str, Any]:
    return {
        "id": report_id,
        "name": "Client weekly",
        "owner": OWNER,
        "source": {"type": "pdf", "title": "Weekly", "data": {"columns": ["k", "v"], "rows": [["a", 1]]}},
        "recipients": {"email": emails},
        **extra,
    }
