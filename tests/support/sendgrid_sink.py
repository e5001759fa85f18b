"""A local server compatible with SendGrid's ``POST /v3/mail/send``.

Answers 202 with an ``X-Message-Id`` and records each accepted body. Tests script
behaviour per recipient (the first personalization's first ``to``)::

    sink.rate_limit("a@x.org", times=2, reset_at=now + 30)   # 429 + X-RateLimit-Reset
    sink.server_error("b@x.org", times=1)                      # 500 once, then 202
    sink.reject("c@x.org", 400)                                # always 400
    sink.slow("d@x.org", delay_ms=500)                         # answers late
    sink.hang_up("e@x.org")                                    # closes without answering

``latency_ms`` delays every answer, as SendGrid's ~50 ms does. Also runs as its own
process for benchmarks: ``python -m tests.support.sendgrid_sink --latency-ms 50``
prints ``PORT <n>`` and serves until stdin closes; ``GET /__sink/stats`` gives counts.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.support.httpbase import FakeHandler, FakeServer, ServedFake

MAIL_SEND = "/v3/mail/send"
_ERROR_TEXT = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    413: "too large",
    429: "too many requests",
}


@dataclass
class Behaviour:
    """One scripted answer. ``times=None`` repeats it forever."""

    status: int = 202
    times: int | None = 1
    delay_ms: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    reset_in: float | None = None  # 429: X-RateLimit-Reset = now + reset_in (wall clock)
    hang_up: bool = False


@dataclass(frozen=True)
class Accepted:
    message_id: str
    recipient: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class Seen:
    recipient: str
    status: int  # 0 = hung up


class SendGridSink(ServedFake):
    def __init__(self, *, latency_ms: float = 0.0, api_key: str | None = None, record: bool = True, port: int = 0):
        self.latency_ms = latency_ms
        self.api_key = api_key  # None: any Bearer token is accepted
        self.record = record
        self.accepted: list[Accepted] = []
        self.seen: list[Seen] = []
        self.counts = {"requests": 0, "accepted": 0, "connections": 0}
        self._scripts: dict[str, deque[Behaviour]] = {}
        self._lock = threading.Lock()
        handler = type("SinkHandler", (_SinkHandler,), {"sink": self})
        self.server = FakeServer(handler, port)

    # -- lifecycle -------------------------------------------------------------
    # -- scripting -------------------------------------------------------------
    def script(self, recipient: str, *behaviours: Behaviour) -> None:
        with self._lock:
            self._scripts.setdefault(recipient.lower(), deque()).extend(behaviours)

    def rate_limit(
        self, recipient: str, times: int = 1, *, reset_at: float | None = None, reset_in: float = 60.0
    ) -> None:
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"}
        if reset_at is not None:
            headers["X-RateLimit-Reset"] = str(int(reset_at))
            self.script(recipient, Behaviour(429, times, headers=headers))
        else:
            self.script(recipient, Behaviour(429, times, headers=headers, reset_in=reset_in))

    def server_error(self, recipient: str, times: int = 1, status: int = 500) -> None:
        self.script(recipient, Behaviour(status, times))

    def reject(self, recipient: str, status: int = 400) -> None:
        self.script(recipient, Behaviour(status, None))

    def slow(self, recipient: str, delay_ms: float, times: int | None = None) -> None:
        self.script(recipient, Behaviour(202, times, delay_ms=delay_ms))

    def hang_up(self, recipient: str, times: int = 1) -> None:
        self.script(recipient, Behaviour(0, times, hang_up=True))

    # -- reading what happened -------------------------------------------------
    def accepted_for(self, recipient: str) -> list[Accepted]:
        with self._lock:
            return [a for a in self.accepted if a.recipient == recipient.lower()]

    def statuses_for(self, recipient: str) -> list[int]:
        with self._lock:
            return [s.status for s in self.seen if s.recipient == recipient.lower()]

    def _next(self, recipient: str) -> Behaviour | None:
        with self._lock:
            queue = self._scripts.get(recipient)
            if not queue:
                return None
            behaviour = queue[0]
            if behaviour.times is not None:
                behaviour.times -= 1
                if behaviour.times <= 0:
                    queue.popleft()
            return behaviour

    def _note(self, recipient: str, status: int, accepted: Accepted | None = None) -> None:
        with self._lock:
            self.counts["requests"] += 1
            if accepted is not None:
                self.counts["accepted"] += 1
            if self.record:
                self.seen.append(Seen(recipient, status))
                if accepted is not None:
                    self.accepted.append(accepted)


class _SinkHandler(FakeHandler):
    sink: SendGridSink

    def setup(self) -> None:
        super().setup()
        with self.sink._lock:
            self.sink.counts["connections"] += 1  # one per TCP connection: shows keep-alive reuse

    def do_GET(self) -> None:
        if self.path == "/__sink/stats":
            with self.sink._lock:
                self.reply(200, dict(self.sink.counts))
        else:
            self.reply(404, {"errors": [{"message": "not found", "field": None}]})

    def do_POST(self) -> None:
        started = time.perf_counter()
        raw = self.read_body()
        sink = self.sink
        if self.path != MAIL_SEND:
            return self.reply(404, _errors("not found"))
        if not self._authorized():
            sink._note("", 401)
            return self.reply(401, _errors(_ERROR_TEXT[401]))
        try:
            body = json.loads(raw)
            recipient = str(body["personalizations"][0]["to"][0]["email"]).lower()
        except (ValueError, KeyError, IndexError, TypeError):
            sink._note("", 400)
            return self.reply(400, _errors("Bad Request", "personalizations"))
        behaviour = sink._next(recipient) or Behaviour()
        # The latency is the answer time, including this handler's own work.
        self.server.pause((sink.latency_ms + behaviour.delay_ms) / 1000 - (time.perf_counter() - started))
        if behaviour.hang_up:
            sink._note(recipient, 0)
            return self.hang_up()
        if behaviour.status != 202:
            headers = dict(behaviour.headers)
            if behaviour.reset_in is not None:
                headers["X-RateLimit-Reset"] = str(int(time.time() + behaviour.reset_in))
            sink._note(recipient, behaviour.status)
            text = _ERROR_TEXT.get(behaviour.status, "internal server error")
            return self.reply(behaviour.status, _errors(text), headers)
        message_id = secrets.token_urlsafe(16)
        sink._note(recipient, 202, Accepted(message_id, recipient, body, dict(self.headers.items())))
        self.reply(202, b"", {"X-Message-Id": message_id})

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if self.sink.api_key is None:
            return auth.startswith("Bearer ") and len(auth) > len("Bearer ")
        return auth == f"Bearer {self.sink.api_key}"


def _errors(message: str, field_name: str | None = None) -> dict[str, Any]:
    # SendGrid's error body: {"errors": [{"message": ..., "field": ..., "help": ...}]}
    return {"errors": [{"message": message, "field": field_name, "help": None}]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    # Own process, many sleeping handler threads: wake them promptly (default GIL switch is 5 ms).
    sys.setswitchinterval(0.0005)
    with SendGridSink(latency_ms=args.latency_ms, record=False, port=args.port) as sink:
        print(f"PORT {sink.server.server_address[1]}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
