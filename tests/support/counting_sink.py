"""A separate process that counts what Herald did to the outside world: the oracle for
"exactly once" (files keyed by delivery id cannot show a duplicate; a counter elsewhere can).

It serves, on one port:
- ``POST /v3/mail/send`` as SendGrid does (202 + ``X-Message-Id``), counting each accepted
  message per recipient; ``--reject ADDRESS`` answers 400 for that recipient (permanent);
- ``GET /report.pdf``: a report for an http source, counting renders (``--source-delay``
  seconds before it answers, to widen races); ``GET /hang.pdf`` answers only after
  ``--hang-seconds`` (a hung upstream, bounded so the test ends);
- ``/ping/...`` (GET or POST): Healthchecks-style heartbeats, recording method, path and body;
- ``GET /__counts``: ``{"mail": {recipient: n}, "renders": n, "pings": [[method, path, body], ...]}``.

Run: ``python -m tests.support.counting_sink [--reject a@x.org]...``; it binds port 0 itself,
prints ``PORT <n>`` and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


class Counts:
    def __init__(self, reject: set[str], source_delay: float, hang_seconds: float = 0.0) -> None:
        self.reject = reject
        self.source_delay = source_delay
        self.hang_seconds = hang_seconds
        self.hung = 0
        self.mail: Counter[str] = Counter()
        self.renders = 0
        self.pings: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"mail": dict(self.mail), "renders": self.renders, "hung": self.hung, "pings": list(self.pings)}


class Handler(BaseHTTPRequestHandler):
    counts: Counts
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/__counts":
            return self._reply(200, json.dumps(self.counts.snapshot()).encode(), {"Content-Type": "application/json"})
        if self.path.startswith("/report.pdf"):
            time.sleep(self.counts.source_delay)  # a slow upstream, so that racing renders overlap
            with self.counts.lock:
                self.counts.renders += 1
            return self._reply(200, PDF, {"Content-Type": "application/pdf"})
        if self.path.startswith("/hang.pdf"):
            with self.counts.lock:
                self.counts.hung += 1
            time.sleep(self.counts.hang_seconds)
            return self._reply(200, PDF, {"Content-Type": "application/pdf"})
        if self.path.startswith("/ping/"):
            return self._ping("GET", b"")
        return self._reply(404)

    def do_POST(self) -> None:
        body = self._body()
        if self.path.startswith("/ping/"):
            return self._ping("POST", body)
        if self.path != "/v3/mail/send":
            return self._reply(404)
        try:
            recipient = str(json.loads(body)["personalizations"][0]["to"][0]["email"]).lower()
        except (ValueError, KeyError, IndexError, TypeError):
            return self._reply(400, b'{"errors": [{"message": "Bad Request"}]}')
        if recipient in self.counts.reject:
            return self._reply(400, b'{"errors": [{"message": "invalid recipient", "field": "to"}]}')
        with self.counts.lock:
            self.counts.mail[recipient] += 1
        self._reply(202, b"", {"X-Message-Id": secrets.token_urlsafe(12)})

    def _ping(self, method: str, body: bytes) -> None:
        with self.counts.lock:
            self.counts.pings.append((method, self.path.split("?", 1)[0], body.decode(errors="replace")))
        self._reply(200, b"OK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reject", action="append", default=[])
    parser.add_argument("--source-delay", type=float, default=0.0)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    counts = Counts({r.lower() for r in args.reject}, args.source_delay, args.hang_seconds)
    handler = type("CountingHandler", (Handler,), {"counts": counts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()
