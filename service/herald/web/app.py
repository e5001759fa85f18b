"""The Flask application factory: thin entrypoints over the services."""

from __future__ import annotations

from flask import Flask, jsonify

from herald.bootstrap import Container, build_container
from herald.settings import Settings
from herald.web import errors


def create_app(container: Container | None = None, settings: Settings | None = None) -> Flask:
    """Build the app. With no container, wire one from the environment (gunicorn's entry)."""
    if container is None:
        settings = settings or Settings()
        from herald.logs import configure_logging

        configure_logging(settings.log_level, getattr(settings, "gcp_project", ""))
        container = build_container(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024  # SendGrid event batches can be large
    app.extensions["herald"] = container
    errors.register(app)

    from herald.web import api, links, tasks

    for blueprint in (tasks.bp, api.bp, links.bp):
        app.register_blueprint(blueprint)

    @app.get("/healthz")
    def healthz() -> object:
        return jsonify({"status": "ok", "backend": container.settings.backend})

    return app
