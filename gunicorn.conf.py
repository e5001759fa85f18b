"""Gunicorn on Cloud Run (gunicorn reads ./gunicorn.conf.py from its working directory).

One process with eight threads: Cloud Run scales by instances and routes up to
``max_instance_request_concurrency`` (8, terraform) requests to each, so one worker
with 8 threads matches; more processes would only multiply memory and clients.
https://cloud.google.com/run/docs/tips/python#optimize_gunicorn
"""

from __future__ import annotations

import os

wsgi_app = "herald.web.app:create_app()"
bind = f":{os.environ.get('PORT', '8080')}"  # Cloud Run sets PORT
workers = 1
worker_class = "gthread"
threads = 8
# No worker timeout: Cloud Run enforces the request timeout itself, and a Cloud Tasks
# dispatch may legitimately take minutes (tasks_dispatch_deadline_seconds).
timeout = 0
# Cloud Run sends SIGTERM and SIGKILLs 10 s later: finish in-flight requests within 8.
# An unfinished task is retried by Cloud Tasks and its claim's lease expires, so a cut
# send is reconciled, never silently lost.
graceful_timeout = 8
keepalive = 5  # above 2 s, so the Cloud Run front end's keep-alive connections are reused
# No access log: Cloud Run writes a request log entry for every request already.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("HERALD_LOG_LEVEL", "INFO").lower()
# Gunicorn 25+ opens a control socket under $HOME; the container's user has no home.
control_socket_disable = True
# Gunicorn's own lines as the same JSON Cloud Logging parses (severity, message).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "herald.logs.JsonFormatter", "project": os.environ.get("HERALD_GCP_PROJECT", "")},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
    },
    # Gunicorn merges this over its defaults, whose root logger names a handler replaced here.
    "root": {"handlers": ["stderr"], "level": loglevel.upper()},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
    },
}
