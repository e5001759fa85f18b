"""One typed, frozen settings object parsed once from the environment.

Every variable is prefixed ``HERALD_``. Bad values fail loudly at start-up
(pydantic raises), never later in a request. The embedded backend is the
default so ``make run`` needs no environment at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", frozen=True, extra="ignore")

    backend: Literal["embedded", "gcp"] = "embedded"  # embedded: SQLite + local files + in-process queue; gcp
    # Which route set this process serves. On Cloud Run the one image runs as three
    # services (terraform/modules/herald): worker = /tasks, /scheduler, /pubsub (private);
    # ingress = /webhooks, /l, /healthz (public); admin = /admin, /api (behind IAP).
    # "all" serves every route (embedded, make run, tests).
    role: Literal["all", "worker", "ingress", "admin"] = "all"
    data_dir: Path = Path("var")  # embedded backend: database, queue, rendered reports and outbox live here
    host: str = "127.0.0.1"  # address `herald serve` binds
    port: int = 8080  # port `herald serve` binds
    base_url: str = ""  # public URL used in links; defaults to http://host:port
    api_token: str = ""  # bearer token for /api; empty = open only to loopback callers of loopback-bound serve
    secret_key: str = ""  # HMAC key for blob links and internal calls; generated per data dir if empty
    log_level: str = "INFO"  # DEBUG, INFO, WARNING or ERROR; logs are JSON lines on stderr

    # Scheduling
    tick_seconds: float = 60.0  # embedded backend: how often the in-process ticker runs the tick
    misfire_seconds: int = 600  # a slot later than this when the tick sees it is recorded missed
    tick_batch: int = 500  # due schedules one tick handles at most (the rest wait for the next tick)

    # Delivery
    retry_delays: Annotated[tuple[float, ...], NoDecode] = (120.0, 480.0, 1920.0)  # seconds: 2, 8, 32 minutes
    max_retries: int = 3  # retries after a transient failure (attempts = 1 + retries)
    lease_seconds: float = 120.0  # how long a claimed delivery is held before another worker may take it
    link_ttl_seconds: int = 7 * 24 * 3600  # lifetime of a recipient's download link (7 days)
    worker_threads: int = 8  # embedded backend: task worker threads
    # A Python process runs on about one CPU core; each more worker process (same data folder
    # and queue, worker_processes.py) adds a core's worth of sends. One per core is the most useful.
    worker_processes: int = 1  # embedded backend: processes running sends, finish steps and alerts: serve plus N-1

    http_timeout_seconds: float = 10.0  # the http source's connect timeout (and fetching Google's / IAP's keys)

    # Mail / chat (outbox files unless credentials are set)
    mail_from: str = "reports@herald.local"  # From address of report and alert e-mails
    mail_from_name: str = "Herald Reports"  # From display name
    reply_to: str = ""  # Reply-To address; empty = none

    # SendGrid (v3 mail send; an empty API key means mail goes to the outbox)
    sendgrid_api_key: str = ""  # SendGrid API key (secret); empty = write mail to the outbox
    sendgrid_host: str = "https://api.sendgrid.com"  # SendGrid API base URL (tests point it at a local server)
    sendgrid_timeout_seconds: float = 10.0  # timeout of one mail-send request
    sendgrid_asm_group_id: int | None = None  # set: SendGrid's unsubscribe group; unset: List-Unsubscribe headers
    sendgrid_open_tracking: bool = True  # SendGrid open tracking (per-recipient opens)
    sendgrid_click_tracking: bool = False  # off: rewritten links would count scanner clicks as downloads
    sendgrid_categories: Annotated[tuple[str, ...], NoDecode] = ("herald",)  # comma-separated in the env

    # Slack (bot token for chat.postMessage / files_upload_v2; webhook URLs need none)
    slack_bot_token: str = ""  # Slack bot token (secret) for chat.postMessage / files_upload_v2; empty = outbox
    slack_api_url: str = "https://slack.com/api/"  # Slack Web API base URL (tests point it at a local fake)
    slack_timeout_seconds: float = 10.0  # timeout of one Slack request
    slack_live: bool = False  # post to Slack without a bot token (incoming-webhook targets only)

    # Business events, upstream dependencies and the watchdog (issue 5)
    # A JSON object in the env; a list per source while rotating: {"erp": ["new", "old"]}.
    event_secrets: dict[str, str | list[str]] = {}  # per-source HMAC secrets of /webhooks/events/<source> (secret)
    event_tolerance_seconds: int = 300  # a signed event older or newer than this is refused (replay window)
    dependency_recheck_seconds: float = 300.0  # a waiting run re-checks its upstream records this often
    ops_slack_channel: str = "#reporting-ops"  # where the watchdog posts (channel id/name or webhook URL)
    watchdog_grace_seconds: int = 1200  # a scheduled run not complete this long after its slot is late
    watchdog_interval_seconds: float = 300.0  # `herald serve`: how often the in-process watchdog runs
    watchdog_max_runtime_seconds: int = 7200  # a run in one state this long is stuck (waiting: past its deadline)
    watchdog_heartbeat_url: str = ""  # the watchdog's own dead-man monitor, pinged every pass; empty = none
    watchdog_max_alerts: int = 10  # alerts posted one by one per pass; more are summarised in one message
    watchdog_notify_failed_runs: bool = False  # also tell ops about every failed/partial run, not only late ones

    # Admin (/admin pages). Embedded backend: a login with a token; gcp backend: behind IAP.
    admin_token: str = ""  # /admin login (secret); empty = HERALD_API_TOKEN; neither = loopback-bound serve only
    iap_audience: str = ""  # gcp: audience of the IAP JWT /admin accepts (/projects/NUMBER/...); empty = admin closed
    # IAP's ES256 keys by key id, PEM; the -jwk variant of this URL needs pyjwt, which Herald does not ship.
    iap_certs_url: str = "https://www.gstatic.com/iap/verify/public_key"

    # SendGrid Event Webhook (/webhooks/sendgrid), feedback, suppressions and links (issue 3).
    # The key is the Signed Event Webhook's verification key as SendGrid shows it (base64 DER, no PEM armour).
    sendgrid_webhook_public_key: str = ""  # SendGrid's P-256 verification key; empty = webhook refuses all (503)
    sendgrid_webhook_tolerance_seconds: int = 600  # a signature timestamp further than this from now is refused
    reconcile_wait_seconds: float = 900.0  # an e-mail whose send outcome is unknown waits this long for its events
    link_renew_interval_seconds: int = 3600  # an expired link can ask for a fresh one once per this interval
    # Where owner and ops alerts go: "email", "slack" or both (comma-separated in the env).
    alert_channels: Annotated[tuple[Literal["email", "slack"], ...], NoDecode] = ("email",)
    owner_slack_channel: str = ""  # owner alerts also go here when alert_channels has slack (channel id or webhook URL)
    ops_email: str = ""  # ops alerts also go to this address when alert_channels has email; empty = Slack only

    @field_validator("alert_channels", mode="before")
    @classmethod
    def _split_channels(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("sendgrid_categories", mode="before")
    @classmethod
    def _split_categories(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_delays", "alert_retry_delays", "heartbeat_retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_delays", "alert_retry_delays", "heartbeat_retry_delays")
    @classmethod
    def _delays_cover_retries(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("must be a non-empty list of non-negative seconds")
        return value

    # Notifications and run steps (issue 10): Herald's own side effects are durable work.
    # Owner alerts and ops messages retry at these delays (seconds, comma-separated): over an
    # hour in all by default, then the other configured channel, then "undelivered" in the admin.
    alert_retry_delays: Annotated[tuple[float, ...], NoDecode] = (60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 1800.0)
    # Heartbeat pings retry quickly and give up within a monitor's usual one-minute grace.
    heartbeat_retry_delays: Annotated[tuple[float, ...], NoDecode] = (5.0, 15.0, 30.0)
    heartbeat_timeout_seconds: float = 5.0  # timeout of one heartbeat ping (its own, not the http source's)
    http_source_max_seconds: float = 300.0  # ceiling on any http source's timeout_seconds (a hung upstream)
    render_lease_seconds: float = 900.0  # a claimed render is another worker's after this (above any source timeout)
    reconcile_after_seconds: float = 300.0  # gcp safety net: work with no progress this long is queued again
    reconcile_max_recoveries: int = 3  # a run re-queued this often without progress fails (owner alerted)

    # GCP backend (HERALD_BACKEND=gcp). Emulator hosts are set only by tests and local runs.
    gcp_project: str = ""  # project id of every GCP resource below
    gcp_location: str = "europe-west1"  # region of the Cloud Tasks queue and the Cloud Scheduler jobs
    gcp_call_timeout_seconds: float = 10.0  # per-attempt timeout of every Google API call
    gcp_retry_deadline_seconds: float = 30.0  # total time to keep retrying transient Google API errors
    tasks_queue: str = "herald-tasks"  # Cloud Tasks queue id
    tasks_worker_url: str = ""  # base URL of the worker service; a task POSTs to worker_url + task.path
    tasks_service_account: str = ""  # e-mail of the account whose OIDC token Cloud Tasks sends
    tasks_oidc_audience: str = ""  # audience of that token; empty = tasks_worker_url
    tasks_dispatch_deadline_seconds: int = 600  # Cloud Tasks accepts 15 s to 30 min for HTTP targets
    tasks_fanout_pool: int = 16  # concurrent create_task calls during fan-out
    tasks_emulator_host: str = ""  # host:port of gcloud-tasks-emulator (plain gRPC); empty = Google
    oidc_audience: str = ""  # audience internal routes (/tasks, /pubsub, /scheduler) accept
    oidc_allowed_emails: Annotated[tuple[str, ...], NoDecode] = ()  # invoker service accounts; comma-separated
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"  # Google's ID-token signing certs
    oidc_clock_skew_seconds: int = 10  # leeway on iat / exp
    # Per route family, the one invoker each caller uses (Cloud Tasks, Pub/Sub push,
    # Cloud Scheduler); comma-separated. Empty = oidc_allowed_emails for that family.
    oidc_tasks_emails: Annotated[tuple[str, ...], NoDecode] = ()  # invokers accepted on /tasks/*
    oidc_pubsub_emails: Annotated[tuple[str, ...], NoDecode] = ()  # invokers accepted on /pubsub/*
    oidc_scheduler_emails: Annotated[tuple[str, ...], NoDecode] = ()  # invokers accepted on /scheduler/*
    firestore_emulator_host: str = ""  # host:port of the Firestore emulator; empty = FIRESTORE_EMULATOR_HOST or Google
    gcs_bucket: str = ""  # bucket of rendered reports
    gcs_signing_key_file: str = ""  # service-account JSON key; empty = sign through IAM signBlob (Cloud Run)
    gcs_signer_email: str = ""  # account that signs through signBlob; empty = the runtime's own account
    storage_emulator_host: str = ""  # http://host:port of fake-gcs-server; empty = Google
    pubsub_topics: dict[str, str] = {"runs": "herald-runs", "deliveries": "herald-deliveries"}  # key -> topic id
    pubsub_publish_timeout_seconds: float = 10.0  # wait for the publish to be acknowledged
    pubsub_emulator_host: str = ""  # host:port of the Pub/Sub emulator; empty = Google
    scheduler_tick_job: str = "herald-tick"  # Cloud Scheduler job id of the one-minute tick

    # Throughput and queues (issue 14)
    # Embedded: renders (/tasks/runs/execute) have their own bounded pool, so a hung source
    # holds at most render_threads and never delays sends, finish steps or notifications,
    # which run on worker_threads. gcp: run steps, sends and notifications on their own
    # Cloud Tasks queues; sends spread over tasks_send_shards queues (docs/scaling.md).
    render_threads: int = 4  # embedded backend: worker threads that render (the rest use worker_threads)
    tasks_send_queue: str = ""  # Cloud Tasks queue id of sends; empty = tasks_queue
    tasks_send_shards: int = 1  # sends spread over this many queues, <tasks_send_queue>-0..N-1 when above 1
    tasks_notify_queue: str = ""  # Cloud Tasks queue id of owner alerts, ops messages, pings; empty = tasks_queue

    @field_validator(
        "oidc_allowed_emails", "oidc_tasks_emails", "oidc_pubsub_emails", "oidc_scheduler_emails", mode="before"
    )
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _render_claim_outlasts_sources(self) -> Settings:
        if self.render_lease_seconds <= self.http_source_max_seconds:
            raise ValueError("render_lease_seconds must be above http_source_max_seconds (a render outlives its claim)")
        return self

    @field_validator("tasks_dispatch_deadline_seconds")
    @classmethod
    def _deadline_in_range(cls, value: int) -> int:
        # https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues.tasks#Task.FIELDS.dispatch_deadline
        if not 15 <= value <= 1800:
            raise ValueError("tasks_dispatch_deadline_seconds must be between 15 and 1800")
        return value

    @field_validator("render_threads", "tasks_send_shards")
    @classmethod
    def _pool_size(cls, value: int) -> int:
        if not 1 <= value <= 256:
            raise ValueError("render_threads and tasks_send_shards must be between 1 and 256")
        return value

    @field_validator("worker_processes")
    @classmethod
    def _processes_in_range(cls, value: int) -> int:
        if not 1 <= value <= 64:
            raise ValueError("worker_processes must be between 1 and 64")
        return value

    @field_validator("tasks_fanout_pool")
    @classmethod
    def _pool_positive(cls, value: int) -> int:
        if not 1 <= value <= 256:
            raise ValueError("tasks_fanout_pool must be between 1 and 256")
        return value

    # Security (issue 11) -----------------------------------------------------------------
    # Extra Host header values accepted besides HERALD_BASE_URL's host and the loopback
    # names (DNS-rebinding guard); comma-separated host or host:port.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()  # extra Host values accepted; comma-separated
    admin_idle_seconds: int = 1800  # an admin session unused this long is signed out (embedded login)
    admin_session_max_seconds: int = 12 * 3600  # an admin session ends this long after sign-in, used or not
    admin_login_max_attempts: int = 5  # failed admin logins per client address per window before 429
    admin_login_window_seconds: int = 900  # the window of admin_login_max_attempts
    source_root: Path | None = None  # file sources read only under this folder; unset = the definitions' folder
    # http sources, heartbeats and Slack webhooks may reach private and loopback addresses
    # (never link-local or metadata); tests and labs only.
    allow_private_targets: bool = False  # let outbound URLs reach private/loopback addresses (never metadata)
    max_param_chars: int = 500  # longest run parameter value /api accepts (400 beyond); summaries cut any at 500

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator(
        "admin_idle_seconds",
        "admin_session_max_seconds",
        "admin_login_max_attempts",
        "admin_login_window_seconds",
        "max_param_chars",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a positive whole number")
        return value

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def public_url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
