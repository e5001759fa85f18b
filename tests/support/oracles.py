"""Oracles that do not come from the code under test.

- ``event_signature``: the business-event webhook signature, written from the scheme
  the README documents (``v1=<hex HMAC-SHA256(secret, ts + "." + body)>``), not from
  Herald's own ``signature()``: a bug there cannot make the tests agree with it.
- ``snapshot``: everything a refusal could have written: every row of every table of
  the embedded SQLite database(s) under the data dir, the tasks a ``RecordingQueue``
  holds, and what the scripted mailer and chat sent. "Nothing changed" is
  ``snapshot(c) == before``.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from typing import Any

from herald.ports.container import Container
from tests.fakes import RecordingQueue, ScriptedChat, ScriptedMailer


def event_signature(secret: str, timestamp: str | int, body: bytes) -> str:
    """README, routes: ``X-Herald-Signature: v1=<hex HMAC-SHA256(secret, ts + "." + body)>``."""
    message = f"{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _tables(path: Any) -> dict[str, list[tuple[Any, ...]]]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: sorted(map(tuple, connection.execute(f'SELECT * FROM "{name}"')), key=repr) for name in names}
    finally:
        connection.close()


def snapshot(c: Container) -> dict[str, Any]:
    state: dict[str, Any] = {
        str(path.name): _tables(path) for path in sorted(c.settings.data_dir.rglob("*.db")) if path.is_file()
    }
    assert state, f"no SQLite database under {c.settings.data_dir}: the snapshot would prove nothing"
    if isinstance(c.queue, RecordingQueue):
        state["queue"] = sorted(c.queue.tasks)
    if isinstance(c.mailer, ScriptedMailer):
        state["mail"] = {to: len(sent) for to, sent in c.mailer.sent.items()}
    if isinstance(c.chat, ScriptedChat):
        state["chat"] = {to: len(sent) for to, sent in c.chat.posted.items()}
    return state
