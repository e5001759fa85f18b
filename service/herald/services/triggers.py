"""Business events start runs: one run per (matching report, source, event id).

Both doors lead here: the signed webhook (web/events.py) and Pub/Sub push
(web/pubsub.py). An event is ``{id, type, occurred_at?, data: {...}}``. It is idempotent
by (source, event id): a repeat answers the run ids of the first delivery, and the same
id with other content is refused (``EventConflict``), never silently merged. The first
delivery's digest and run ids are kept with ``store.put_inbound_event`` (kind
``trigger:<source>``) only after its runs exist, so a crash in between is healed by the
sender's retry (run creation is idempotent by its derived id).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, TypeAdapter, ValidationError

from herald.domain import ids
from herald.domain.paths import is_path, parse_path, resolve
from herald.domain.records import Run
from herald.domain.reports import EventTrigger, ReportDefinition, check_params
from herald.ports.container import Container
from herald.services import dependencies
from herald.services.runs import new_run, submit_run

log = logging.getLogger(__name__)

_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)
MAX_EVENT_RECIPIENTS = 500


class EventRejected(ValueError):
    """An event that can never be handled as sent; ``status`` is the HTTP answer."""

    status = 400


class InvalidEvent(EventRejected):
    status = 400


class EventConflict(EventRejected):
    """A known event id with different content."""

    status = 422


class UnusableEvent(EventRejected):
    """A matching report cannot use the payload (a mapped parameter is missing)."""

    status = 422


class Event(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
    type: Annotated[str, Field(min_length=1, max_length=200)]
    occurred_at: AwareDatetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Ingested:
    event_id: str
    run_ids: list[str]
    replayed: bool


def event_digest(event: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (as web/pubsub.digest), so both doors agree on "same event"."""
    return hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def ingest_event(c: Container, source: str, event: Any, raw_digest: str | None = None) -> list[str]:
    """The Pub/Sub intake's entry: the run ids this event started (or started before)."""
    return ingest(c, source, event, raw_digest).run_ids


def record_job_status(c: Container, data: Any, via: str = "pubsub") -> tuple[dict[str, Any], bool]:
    """The Pub/Sub intake's entry for upstream completion records (see services/dependencies)."""
    return dependencies.record_job_status(c, data, via=via)


def ingest(c: Container, source: str, event: Any, digest: str | None = None) -> Ingested:
    if not isinstance(event, dict):
        raise InvalidEvent("an event is a JSON object {id, type, data}")
    try:
        parsed = Event.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors())
        raise InvalidEvent(f"invalid event: {problems}") from None
    digest = digest or event_digest(event)
    kind = f"trigger:{source}"
    known = c.store.get_inbound_event(kind, parsed.id)
    if known is not None:
        return _replay(known, digest, source, parsed.id)
    planned = plan_runs(c, source, parsed, event)
    for run in planned:
        submit_run(c, run)
    run_ids = [r.id for r in planned]
    doc = {
        "digest": digest,
        "type": parsed.type,
        "run_ids": run_ids,
        "received_at": c.clock.now().isoformat(),
    }
    if not c.store.put_inbound_event(kind, parsed.id, doc, c.clock.now()):  # a concurrent delivery won
        return _replay(c.store.get_inbound_event(kind, parsed.id) or doc, digest, source, parsed.id)
    log.info(
        "event ingested",
        extra={"source": source, "event_id": parsed.id, "event_type": parsed.type, "runs": len(planned)},
    )
    return Ingested(parsed.id, run_ids, replayed=False)


def _replay(known: dict[str, Any], digest: str, source: str, event_id: str) -> Ingested:
    if known.get("digest") != digest:
        log.warning("event id reused with other content", extra={"source": source, "event_id": event_id})
        raise EventConflict(f"event {event_id!r} from {source!r} was received before with different content")
    log.info("event received again", extra={"source": source, "event_id": event_id})
    return Ingested(event_id, list(known.get("run_ids", [])), replayed=True)


def matching_trigger(report: ReportDefinition, source: str, event: dict[str, Any]) -> EventTrigger | None:
    if not report.enabled:
        return None
    for trigger in report.triggers:
        if trigger.source == source and trigger.event == event.get("type") and _conditions_hold(trigger, event):
            return trigger
    return None


def _conditions_hold(trigger: EventTrigger, event: dict[str, Any]) -> bool:
    for path, expected in trigger.conditions.items():
        wanted = expected if isinstance(expected, list) else [expected]
        found = resolve(parse_path(path), event)
        if not any(_same(value, w) for value in found for w in wanted):
            return False
    return True


def _same(value: Any, wanted: Any) -> bool:
    # bool is an int in Python: keep true != 1 as JSON and YAML mean it.
    return isinstance(value, bool) == isinstance(wanted, bool) and value == wanted


def plan_runs(c: Container, source: str, parsed: Event, event: dict[str, Any]) -> list[Run]:
    """One run per matching report (the first matching trigger of each decides)."""
    now = c.clock.now()
    planned = []
    for stored in c.store.list_reports():
        report = stored.definition
        trigger = matching_trigger(report, source, event)
        if trigger is None:
            continue
        params = _params(report, trigger, event)
        try:  # the same limits as the API's: no header injection, no 2 MB parameter in every e-mail
            check_params(params, c.settings.max_param_chars)
        except ValueError as exc:
            raise UnusableEvent(f"report {report.id!r}: {exc}") from None
        run = new_run(report, ids.event_run_id(report.id, source, parsed.id), "event", now, params=params)
        run.extra_recipients = _recipients(report, trigger, event, parsed.id)
        planned.append(run)
    return planned


def _params(report: ReportDefinition, trigger: EventTrigger, event: dict[str, Any]) -> dict[str, str]:
    params = {}
    for name, source in trigger.params.items():
        if not is_path(source):
            params[name] = source
            continue
        found = resolve(parse_path(source), event)
        if not found or not isinstance(found[0], str | int | float | bool) or found[0] == "":
            raise UnusableEvent(f"report {report.id!r} needs {source} (a text or number) for its parameter {name!r}")
        value = found[0]
        params[name] = json.dumps(value) if isinstance(value, bool) else str(value)
    return params


def _recipients(report: ReportDefinition, trigger: EventTrigger, event: dict[str, Any], event_id: str) -> list[str]:
    addresses: list[str] = []
    for path in trigger.recipient_paths():
        for value in resolve(parse_path(path), event):
            try:
                address = _EMAIL.validate_python(value)
            except ValidationError:
                # One bad contact must not stop the others (or the report): log and go on.
                log.warning(
                    "event recipient ignored: not an e-mail address",
                    extra={"report_id": report.id, "event_id": event_id, "path": path},
                )
                continue
            if address.lower() not in (a.lower() for a in addresses):
                addresses.append(address)
    if len(addresses) > MAX_EVENT_RECIPIENTS:
        raise UnusableEvent(f"report {report.id!r}: more than {MAX_EVENT_RECIPIENTS} recipients in one event")
    return addresses
