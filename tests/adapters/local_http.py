"""A real HTTP server on 127.0.0.1 for adapter tests: scripted replies, recorded requests.

A reply with ``hold=True`` waits (on an event, not a sleep) until the test ends, which
is how a slow upstream is simulated; the client's timeout must fire first.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Route = Callable[[Seen], Reply]


@dataclass
class LocalServer:
    url: str
    routes: dict[str, Route]
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(
            self.command,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            dict(self.headers.items()),
            self.rfile.read(length) if length else b"",
        )
        state.seen.append(seen)
        route = state.routes.get(parts.path)
        reply = route(seen) if route else Reply(404, b"no route")
        if reply.hold:
            state.release.wait(30)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = _serve


@contextmanager
def local_server(routes: dict[str, Route] | None = None) -> Iterator[LocalServer]:
    server = _Server(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    server.state = LocalServer(url=f"http://{host}:{port}", routes=routes or {})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.state
    finally:
        server.state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


_CLOSED: list[socket.socket] = []  # held for the whole test process


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once.

    The port stays bound (never listening) by this process, so no other process can
    start listening on it between this call and the test's request.
    """
    if not _CLOSED:
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.bind(("127.0.0.1", 0))  # bound, not listening: the kernel refuses connections
        _CLOSED.append(holder)
    return f"http://127.0.0.1:{_CLOSED[0].getsockname()[1]}"
