# Herald: one image for every Cloud Run service (HERALD_ROLE picks the routes) and the
# watchdog Cloud Run Job (which overrides the command with `herald watchdog`).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    HERALD_DATA_DIR=/tmp/herald \
    HERALD_ALLOW_PRIVATE_TARGETS=false

# Secure by default (issue 11): this command never opens /api or /admin without
# credentials, whatever HERALD_HOST says. Give HERALD_API_TOKEN (and HERALD_ADMIN_TOKEN
# on the embedded backend), or run the gcp backend behind IAP; without them both answer
# 401. Outbound URLs from definitions may not reach private, loopback, link-local or
# metadata addresses unless HERALD_ALLOW_PRIVATE_TARGETS=true.

WORKDIR /app

# Pinned runtime dependencies first, so code changes reuse this layer.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY pyproject.toml README.md ./
COPY service/ service/
# gunicorn reads ./gunicorn.conf.py (threads, graceful SIGTERM, JSON logs, no control socket).
COPY gunicorn.conf.py ./
# Cloud Run Job entrypoints (python -m jobs.watchdog; `herald watchdog` does the same).
COPY jobs/ jobs/
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent herald

USER 10001:10001
EXPOSE 8080

# One process, eight threads, no gunicorn timeout: Cloud Run enforces the request
# timeout and scales on concurrency (matches max_instance_request_concurrency = 8).
# The shell form expands $PORT; exec makes gunicorn PID 1 so it receives SIGTERM.
CMD exec gunicorn --bind ":${PORT}" --workers 1 --threads 8 --timeout 0 --graceful-timeout 8 'herald.web.app:create_app()'
