"""How tests start the app: as `herald serve` bound to loopback, or as gunicorn would."""

from __future__ import annotations

from typing import Any

from flask import Flask

from herald.web.app import create_app
from herald.web.security import OPEN_LOOPBACK


def served_on_loopback(container: Any, bound: str = "127.0.0.1") -> Flask:
    """The app as `herald serve --host <bound>` builds it (cli.py records the bound address)."""
    app = create_app(container)
    app.config[OPEN_LOOPBACK] = bound
    return app
