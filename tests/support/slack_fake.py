"""A local Slack that follows Slack's documented responses, for adapter and e2e tests.

Web API (base URL ``fake.api_url``, as ``WebClient(base_url=...)``):
- ``chat.postMessage`` → ``{"ok": true, "channel", "ts", "message"}``
  (https://docs.slack.dev/reference/methods/chat.postMessage)
- ``files.getUploadURLExternal`` → ``{"ok": true, "upload_url", "file_id"}``, the upload
  URL answers ``200 OK - <bytes>``, ``files.completeUploadExternal`` → ``{"ok": true,
  "files": [...]}`` (https://docs.slack.dev/messaging/working-with-files#upload)
- errors are HTTP 200 with ``{"ok": false, "error": code}``; rate limits are HTTP 429
  with ``Retry-After`` (https://docs.slack.dev/apis/web-api/rate-limits)
Incoming webhooks (``fake.webhook_url(name)``) answer ``200 ok`` or a status with a
text body such as ``404 channel_not_found`` (https://docs.slack.dev/messaging/
sending-messages-using-incoming-webhooks#handling-errors).

Script behaviour per key: a channel id (chat.postMessage and completeUploadExternal),
a webhook name, or ``"files.getUploadURLExternal"`` / ``"upload"`` for those steps.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from tests.support.httpbase import FakeHandler, FakeServer, ServedFake

WEBHOOK_PREFIX = "/services/T0000000/B0000000/"


@dataclass
class SlackBehaviour:
    """One scripted answer; ``times=None`` repeats it forever."""

    status: int = 200
    error: str | None = None  # Web API: {"ok": false, "error": error}; webhook: the text body
    retry_after: int | None = None
    delay_ms: float = 0.0
    times: int | None = 1
    hang_up: bool = False


@dataclass(frozen=True)
class Received:
    kind: str  # "chat" | "webhook" | "file"
    target: str  # channel id or webhook name
    text: str
    body: dict[str, Any]
    data: bytes | None = None
    ref: str = ""  # what Slack answered: the message ts, or the file id


@dataclass
class _Upload:
    filename: str
    length: int
    data: bytes | None = None


class SlackFake(ServedFake):
    def __init__(self, *, token: str | None = None, port: int = 0) -> None:
        self.token = token  # None: any Bearer token is accepted
        self.received: list[Received] = []
        self.requests: list[tuple[str, str, int]] = []  # (method or webhook, key, status)
        self._uploads: dict[str, _Upload] = {}
        self._scripts: dict[str, deque[SlackBehaviour]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        handler = type("SlackHandler", (_SlackHandler,), {"fake": self})
        self.server = FakeServer(handler, port)

    @property
    def api_url(self) -> str:
        return f"{self.server.url}/api/"

    def webhook_url(self, name: str = "hook") -> str:
        return f"{self.server.url}{WEBHOOK_PREFIX}{name}"

    # -- scripting -------------------------------------------------------------
    def script(self, key: str, *behaviours: SlackBehaviour) -> None:
        with self._lock:
            self._scripts.setdefault(key, deque()).extend(behaviours)

    def rate_limit(self, key: str, times: int = 1, retry_after: int = 30) -> None:
        self.script(key, SlackBehaviour(429, "ratelimited", retry_after=retry_after, times=times))

    def api_error(self, key: str, error: str, times: int | None = None) -> None:
        self.script(key, SlackBehaviour(200, error, times=times))

    def http_error(self, key: str, status: int, body: str | None = None, times: int | None = 1) -> None:
        self.script(key, SlackBehaviour(status, body, times=times))

    def slow(self, key: str, delay_ms: float, times: int | None = None) -> None:
        self.script(key, SlackBehaviour(delay_ms=delay_ms, times=times))

    def hang_up(self, key: str, times: int = 1) -> None:
        self.script(key, SlackBehaviour(hang_up=True, times=times))

    # -- reading what happened -------------------------------------------------
    def received_for(self, target: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.target == target]

    def _next(self, key: str) -> SlackBehaviour:
        with self._lock:
            queue = self._scripts.get(key)
            if not queue:
                return SlackBehaviour()
            behaviour = queue[0]
            if behaviour.times is not None:
                behaviour.times -= 1
                if behaviour.times <= 0:
                    queue.popleft()
            return behaviour

    def _note(self, what: str, key: str, status: int, received: Received | None = None) -> None:
        with self._lock:
            self.requests.append((what, key, status))
            if received is not None:
                self.received.append(received)

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ids):06d}"


class _SlackHandler(FakeHandler):
    fake: SlackFake

    def do_POST(self) -> None:
        raw = self.read_body()
        if self.path.startswith(WEBHOOK_PREFIX):
            return self._webhook(self.path[len(WEBHOOK_PREFIX) :], raw)
        if self.path.startswith("/upload/"):
            return self._upload(self.path[len("/upload/") :], raw)
        if self.path.startswith("/api/"):
            return self._api(self.path[len("/api/") :].split("?")[0], self._params(raw))
        self.reply(404, "not found")

    def _params(self, raw: bytes) -> dict[str, Any]:
        if "application/json" in self.headers.get("Content-Type", ""):
            parsed = json.loads(raw or b"{}")
            return parsed if isinstance(parsed, dict) else {}
        return dict(parse_qsl(raw.decode()))

    def _scripted(self, what: str, key: str, *, api: bool) -> bool:
        """Apply a scripted failure; True when the request was answered with it."""
        behaviour = self.fake._next(key)
        self.server.pause(behaviour.delay_ms / 1000)
        if behaviour.hang_up:
            self.fake._note(what, key, 0)
            self.hang_up()
            return True
        if behaviour.status == 200 and behaviour.error is None:
            return False
        self.fake._note(what, key, behaviour.status)
        headers = {"Retry-After": str(behaviour.retry_after)} if behaviour.retry_after is not None else {}
        if api and behaviour.status in (200, 429):
            self.reply(behaviour.status, {"ok": False, "error": behaviour.error or "ratelimited"}, headers)
        else:
            self.reply(behaviour.status, behaviour.error or "internal_error", headers)
        return True

    def _api(self, method: str, params: dict[str, Any]) -> None:
        fake = self.fake
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self.reply(200, {"ok": False, "error": "not_authed"})
        if fake.token is not None and auth != f"Bearer {fake.token}":
            return self.reply(200, {"ok": False, "error": "invalid_auth"})
        if method == "chat.postMessage":
            channel = str(params.get("channel", ""))
            if not channel:
                return self.reply(200, {"ok": False, "error": "channel_not_found"})
            if not params.get("text") and not params.get("blocks"):
                return self.reply(200, {"ok": False, "error": "no_text"})
            if self._scripted(method, channel, api=True):
                return None
            ts = fake._new_ts()
            fake._note(method, channel, 200, Received("chat", channel, str(params["text"]), params, ref=ts))
            message = {"type": "message", "text": params["text"], "ts": ts, "bot_id": "B0000000"}
            return self.reply(200, {"ok": True, "channel": channel, "ts": ts, "message": message})
        if method == "files.getUploadURLExternal":
            if not params.get("filename") or not str(params.get("length", "")).isdigit():
                return self.reply(200, {"ok": False, "error": "invalid_arguments"})
            if self._scripted(method, method, api=True):
                return None
            file_id = f"F{next(fake._ids):09d}"
            with fake._lock:
                fake._uploads[file_id] = _Upload(str(params["filename"]), int(params["length"]))
            fake._note(method, method, 200)
            return self.reply(200, {"ok": True, "upload_url": f"{fake.url}/upload/{file_id}", "file_id": file_id})
        if method == "files.completeUploadExternal":
            return self._complete(params)
        return self.reply(200, {"ok": False, "error": "unknown_method"})

    def _upload(self, file_id: str, raw: bytes) -> None:
        fake = self.fake
        with fake._lock:
            upload = fake._uploads.get(file_id)
        if upload is None:
            return self.reply(404, "not found")
        if self._scripted("upload", "upload", api=False):
            return None
        upload.data = raw
        fake._note("upload", file_id, 200)
        self.reply(200, f"OK - {len(raw)}")

    def _complete(self, params: dict[str, Any]) -> None:
        fake = self.fake
        channel = str(params.get("channel_id", ""))
        try:
            files = json.loads(params.get("files", "[]"))
        except ValueError:
            return self.reply(200, {"ok": False, "error": "invalid_arguments"})
        with fake._lock:
            uploads = [(f, fake._uploads.get(f.get("id", ""))) for f in files]
        if not uploads or any(u is None or u.data is None for _, u in uploads):
            return self.reply(200, {"ok": False, "error": "file_not_found"})
        if channel and self._scripted("files.completeUploadExternal", channel, api=True):
            return None
        done = []
        for meta, upload in uploads:
            assert upload is not None
            text = str(params.get("initial_comment", ""))
            fake._note(
                "files.completeUploadExternal",
                channel,
                200,
                Received("file", channel, text, params, upload.data, meta["id"]),
            )
            done.append({"id": meta["id"], "title": meta.get("title") or upload.filename, "name": upload.filename})
        self.reply(200, {"ok": True, "files": done})

    def _webhook(self, name: str, raw: bytes) -> None:
        if self._scripted("webhook", name, api=False):
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            self.fake._note("webhook", name, 400)
            return self.reply(400, "invalid_payload")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            self.fake._note("webhook", name, 400)
            return self.reply(400, "no_text")
        self.fake._note("webhook", name, 200, Received("webhook", name, str(body.get("text", "")), body))
        self.reply(200, "ok")
