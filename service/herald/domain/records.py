"""Records kept by the store: runs, deliveries, alerts. Timestamps are aware UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from herald.domain.states import DeliveryStatus, RunStatus

Trigger = Literal["schedule", "manual", "event", "test"]  # test: "send a test to me"
MAX_ATTEMPT_LOG = 12
Channel = Literal["email", "slack"]


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Run(Record):
    id: str
    report_id: str
    trigger: Trigger
    status: RunStatus = RunStatus.PENDING
    slot: AwareDatetime | None = None  # the scheduled instant, for schedule triggers
    period: str = ""  # the reporting period label, e.g. 2026-11 or 2026-11-29
    params: dict[str, str] = Field(default_factory=dict)
    extra_recipients: list[str] = Field(default_factory=list)  # e-mails added by an event
    test_to: str = ""  # a test run: rendered as usual, sent only to this address, never counted
    created_at: AwareDatetime
    updated_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    artifact_key: str | None = None
    content_type: str | None = None
    summary: str = ""
    note: str = ""  # e.g. "data as of …" when a dependency timed out
    error: str = ""
    recipients_total: int = 0
    heartbeat_sent: bool = False  # the monitor acknowledged the run's final ping
    # A run step (execute, finish) is claimed like a send: one worker at a time.
    lease_until: AwareDatetime | None = None
    step_attempts: int = 0  # render attempts that met an unexpected error (retried, then failed)
    recoveries: int = 0  # times the reconciler re-queued this run after it made no progress


class Delivery(Record):
    id: str
    run_id: str
    report_id: str
    channel: Channel
    recipient: str
    status: DeliveryStatus = DeliveryStatus.QUEUED
    attempts: int = 0
    lease_until: AwareDatetime | None = None
    next_attempt_at: AwareDatetime | None = None
    provider_message_id: str | None = None
    delivered_at: AwareDatetime | None = None  # accepted by the provider / delivered
    last_error: str = ""
    error_kind: Literal["", "transient", "permanent"] = ""
    link_token: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    events: dict[str, Any] = Field(default_factory=dict)  # provider feedback (first times, counts)
    attempt_log: list[dict[str, str]] = Field(default_factory=list)  # one entry per attempt, capped
    test: bool = False  # of a test run: shown as a test, never in the report's delivery figures

    def log_attempt(self, at: datetime, result: str, error: str = "") -> list[dict[str, str]]:
        entry = {"at": at.isoformat(), "result": result}
        if error:
            entry["error"] = error[:300]
        return [*self.attempt_log, entry][-MAX_ATTEMPT_LOG:]


NotifyChannel = Literal["email", "slack", "heartbeat"]


class ChannelSend(BaseModel):
    """One channel of one notification: claimed, sent once, retried on its own schedule."""

    model_config = ConfigDict(extra="ignore")

    target: str  # e-mail address or Slack channel; heartbeats: "" (the URL is a credential, read at send time)
    status: Literal["pending", "sending", "sent", "failed"] = "pending"
    attempts: int = 0
    lease_until: AwareDatetime | None = None
    next_attempt_at: AwareDatetime | None = None
    sent_at: AwareDatetime | None = None
    last_error: str = ""


class Alert(Record):
    """A notification Herald itself sends: an owner alert, an ops message, a heartbeat ping.

    Its id derives from what it is about, so it is created once; each channel in
    ``channels`` is durable work with its own task (services/notifications.py)."""

    id: str
    kind: str  # e.g. delivery_failures, run_failed, late_run, heartbeat
    target: str  # owner e-mail or ops channel (what it is addressed to; channels say how)
    report_id: str | None = None
    run_id: str | None = None
    subject: str
    body: str
    created_at: AwareDatetime
    sent: bool = False  # some channel took it
    channels: dict[str, ChannelSend] = Field(default_factory=dict)  # by channel: email, slack, heartbeat
    fallbacks: dict[str, str] = Field(default_factory=dict)  # channel -> target, used once every channel gave up
    undelivered: bool = False  # every channel, fallbacks included, gave up: shown in the admin
    params: dict[str, str] = Field(default_factory=dict)  # heartbeat: state, url_from (report | watchdog)

    @property
    def is_heartbeat(self) -> bool:
        return "heartbeat" in self.channels


def now_fields(now: datetime) -> dict[str, datetime]:
    return {"created_at": now, "updated_at": now}
