"""The Flask application factory: thin entrypoints over the services."""

from __future__ import annotations

import importlib
from typing import Any

from flask import Flask, jsonify

from herald.bootstrap import build_container
from herald.ports.container import Container
from herald.settings import Settings
from herald.web import errors, security, trace

# Which route set each role serves (settings.role; "all" serves every one). Module name
# in herald.web -> roles; each module has a ``bp`` blueprint. /healthz is served by all.
ROUTES_BY_ROLE: dict[str, set[str]] = {
    "tasks": {"worker"},  # /tasks/*, /scheduler/* (Cloud Tasks, Cloud Scheduler)
    "pubsub": {"worker"},  # /pubsub/* (Pub/Sub push)
    "links": {"ingress"},  # /l/<token>, /blobs/*
    "events": {"ingress"},  # /webhooks/events/<source> (HMAC-signed business events)
    "webhooks": {"ingress"},  # /webhooks/sendgrid (ECDSA-signed SendGrid events)
    "unsubscribe": {"ingress"},  # /unsubscribe/<token> (RFC 8058 one-click)
    "api": {"admin"},  # /api/*
    "admin": {"admin"},  # /admin/* (pages; web/admin.py)
}


def _warn_closed(settings: Settings) -> None:
    """gunicorn / the image: say at start which route sets refuse every caller (issue 11)."""
    import logging

    serves = settings.role in ("all", "admin")
    if serves and not settings.api_token and not (settings.backend == "gcp" and settings.iap_audience):
        logging.getLogger(__name__).warning("HERALD_API_TOKEN is not set: /api answers 401 to every caller")
    if serves and settings.backend != "gcp" and not (settings.admin_token or settings.api_token):
        logging.getLogger(__name__).warning("HERALD_ADMIN_TOKEN is not set: /admin is closed (sign-in refused)")


def create_app(container: Container | None = None, settings: Settings | None = None) -> Flask:
    """Build the app. With no container, wire one from the environment (gunicorn's entry)."""
    if container is None:
        settings = settings or Settings()
        from herald.logs import configure_logging

        configure_logging(settings.log_level, getattr(settings, "gcp_project", ""))
        container = build_container(settings)
        _warn_closed(container.settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024  # SendGrid event batches can be large
    app.extensions["herald"] = container
    # `herald serve` records the address it bound here (cli.py); any other start (gunicorn's
    # create_app(), the image, tests) is never open without credentials (web/security.py).
    app.config[security.OPEN_LOOPBACK] = None
    errors.register(app)
    security.register(app)

    role = container.settings.role
    for name, roles in ROUTES_BY_ROLE.items():
        if role == "all" or role in roles:
            app.register_blueprint(importlib.import_module(f"herald.web.{name}").bp)
    if container.settings.backend == "gcp" and (role == "all" or role in ROUTES_BY_ROLE["tasks"]):
        # Internal routes verify Google OIDC tokens (web/auth.py); the embedded backend
        # keeps its in-process HMAC header instead.
        from herald.bootstrap_gcp import internal_verifiers

        app.extensions["herald.oidc"] = internal_verifiers(container.settings)
    if container.settings.backend == "gcp" and (role == "all" or role in ROUTES_BY_ROLE["admin"]):
        from herald.bootstrap_gcp import iap_verifier  # /admin behind IAP (web/admin_auth.py)

        app.extensions["herald.iap"] = iap_verifier(container.settings)
    trace.register(app)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok", "backend": container.settings.backend})

    return app
