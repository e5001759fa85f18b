"""Report definitions: what to render, when, and for whom.

Definitions are written in YAML by people, so validation errors must name the report
and the field (``format_errors``) and never surface as a traceback.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from herald.domain.paths import has_wildcard, is_path, parse_path
from herald.domain.strict import has_control, without_control
from herald.domain.targets import url_problem

REPORT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Period = Literal["day", "week", "month", "previous_day", "previous_month"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Schedule(_Strict):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r} (expected 5 fields)")
        try:
            croniter(value, datetime(2000, 1, 1)).get_next(datetime)  # noqa: DTZ001 (wall time)
        except CroniterBadDateError:
            raise ValueError(f"cron expression {value!r} never fires") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/London)") from None
        return value


class TableData(_Strict):
    columns: list[str]
    rows: list[list[Any]] = Field(default_factory=list)


class PdfSource(_Strict):
    """Built-in PDF: a title, the period, the summary line and a table."""

    type: Literal["pdf"]
    title: str | None = None
    data: TableData | None = None
    data_file: str | None = None  # CSV or JSON (list of objects) on disk

    @model_validator(mode="after")
    def _one_data(self) -> PdfSource:
        if self.data is not None and self.data_file is not None:
            raise ValueError("give either data or data_file, not both")
        return self


# Secrets by reference (issue 11): ``${env:NAME}`` in an http source's URL or header values
# is replaced from the process environment when the request is made (adapters/sources/http.py),
# so the stored definition, the API and the admin pages only ever hold the reference.
SECRET_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]{0,127})\}")
REDACTED = "REDACTED"


def _checked_target(url: str) -> str:
    problem = url_problem(SECRET_REF.sub("x", url))
    if problem:
        raise ValueError(f"URL not allowed: {problem}")
    if has_control(url):
        raise ValueError("URL contains control characters")
    return url


def _no_control(value: str) -> str:
    if has_control(value):
        raise ValueError("must not contain line breaks or control characters")
    return value


Target = Annotated[str, Field(pattern=r"^https?://", max_length=2000), AfterValidator(_checked_target)]
HeaderText = Annotated[str, AfterValidator(_no_control)]


class HttpSource(_Strict):
    """A reporting API that returns the rendered file."""

    type: Literal["http"]
    url: Target
    method: Literal["GET", "POST"] = "GET"
    headers: dict[HeaderText, HeaderText] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    content_types: list[str] = Field(default_factory=lambda: ["application/pdf"])


class FileSource(_Strict):
    """A file produced upstream; {period} in the path is replaced by the run's period."""

    type: Literal["file"]
    path: str
    content_type: str = "application/pdf"


Source = Annotated[PdfSource | HttpSource | FileSource, Field(discriminator="type")]


class Recipients(_Strict):
    email: list[EmailStr] = Field(default_factory=list)
    slack: list[str] = Field(default_factory=list)  # channel ids (C…) or incoming-webhook URLs

    @field_validator("email")
    @classmethod
    def _unique_emails(cls, value: list[str]) -> list[str]:
        counts = Counter(address.lower() for address in value)  # linear: lists run to 100,000 addresses
        duplicates = sorted(a for a, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate recipients: {', '.join(duplicates)}")
        return value

    @field_validator("slack")
    @classmethod
    def _slack_targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not (target.startswith("https://") or target.startswith(("C", "G", "D", "#"))):
                raise ValueError(f"slack target {target!r} must be a channel id or an incoming-webhook URL")
            if has_control(target):
                raise ValueError("slack target contains control characters")
            problem = url_problem(target, schemes=("https",)) if target.startswith("https://") else None
            if problem:
                raise ValueError(f"slack webhook URL not allowed: {problem}")
        return value

    def targets(self) -> list[tuple[str, str]]:
        """(channel, recipient) pairs: one delivery each, never one message to many."""
        return [("email", a) for a in self.email] + [("slack", s) for s in self.slack]


# Business-event triggers and upstream dependencies (issue 5) ---------------------------
SOURCE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"  # same as the Pub/Sub intake's source names
JOB_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MAX_DURATION = timedelta(days=31)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``20m``, ``2h``, ``1d``, ``1h30m``: a positive span of at most 31 days."""
    match = _DURATION.match(text.strip())
    if match is None or not any(match.groups()):
        raise ValueError(f"invalid duration {text!r} (e.g. 20m, 2h, 1h30m, 1d)")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    span = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if not timedelta(0) < span <= MAX_DURATION:
        raise ValueError(f"duration {text!r} must be more than 0 and at most 31 days")
    return span


def _checked_duration(text: str) -> str:
    parse_duration(text)
    return text.strip()


Duration = Annotated[str, AfterValidator(_checked_duration)]
Scalar = str | int | float | bool


class EventTrigger(_Strict):
    """Start a run when ``source`` sends an event of type ``event`` whose payload matches.

    Paths (herald.domain.paths) start at the event ``{id, type, occurred_at, data}``.
    ``conditions``: path -> value (or a list: any of them). ``params``: run parameter ->
    path (``$.data.account.id``) or a literal. ``recipients``: path(s) to e-mail
    addresses added to the run (``$.data.contacts[*].email``).
    """

    source: Annotated[str, Field(pattern=SOURCE_PATTERN)]
    event: Annotated[str, Field(min_length=1, max_length=200)]
    conditions: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    recipients: str | list[str] = Field(default_factory=list)

    @field_validator("conditions")
    @classmethod
    def _condition_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            parse_path(path)
        return value

    @field_validator("params")
    @classmethod
    def _param_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for name, source in value.items():
            if is_path(source) and has_wildcard(parse_path(source)):
                raise ValueError(f"param {name!r}: a parameter takes one value, so no [*] in {source!r}")
        return value

    @field_validator("recipients")
    @classmethod
    def _recipient_paths(cls, value: str | list[str]) -> list[str]:
        paths = [value] if isinstance(value, str) else value
        for path in paths:
            parse_path(path)
        return paths

    def recipient_paths(self) -> list[str]:
        return [self.recipients] if isinstance(self.recipients, str) else list(self.recipients)


class Dependency(_Strict):
    """Wait for ``job_status(job, label)`` where the label is the run's own period (``same``)
    or the period of kind ``period`` around the run's slot, so an older record never counts."""

    job: Annotated[str, Field(pattern=JOB_PATTERN)]
    period: Literal["same", "day", "week", "month", "previous_day", "previous_month"] = "same"
    wait_up_to: Duration = "2h"
    on_timeout: Literal["fail", "send_anyway", "skip"] = "fail"

    @property
    def wait(self) -> timedelta:
        return parse_duration(self.wait_up_to)


class ReportDefinition(_Strict):
    id: Annotated[str, Field(pattern=REPORT_ID_PATTERN)]
    # name and summary reach e-mail subjects and chat text: no CR/LF or controls (issue 10/11)
    name: Annotated[HeaderText, Field(min_length=1, max_length=200)]
    owner: EmailStr
    schedule: Schedule | None = None
    period: Period = "day"
    source: Source
    summary: Annotated[HeaderText, Field(max_length=1000)] = "{name} for {period}"
    recipients: Recipients = Field(default_factory=Recipients)
    slack_file: bool = False  # upload the file itself to Slack channels, not just a link
    heartbeat_url: Target | None = None
    enabled: bool = True
    triggers: list[EventTrigger] = Field(default_factory=list)
    depends_on: list[Dependency] = Field(default_factory=list)
    watchdog_grace: Duration | None = None  # default: settings.watchdog_grace_seconds
    # After downtime (issue 12): run only the most recent missed slot and record the older
    # ones as missed (announced in one watchdog incident), or run every slot in the window.
    catchup: Literal["latest", "all"] = "latest"
    # A slot whose previous run of the same report is still rendering: queue behind it
    # (one render per report at a time) or skip the new slot (recorded and announced).
    overlap: Literal["queue", "skip"] = "queue"

    @field_validator("depends_on")
    @classmethod
    def _unique_dependencies(cls, value: list[Dependency]) -> list[Dependency]:
        keys = [(d.job, d.period) for d in value]
        if len(set(keys)) != len(keys):
            raise ValueError("the same job and period are listed twice")
        return value

    @field_validator("summary")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(name="", period="", rows=0, params=defaultdict(str))  # {params[x]}: any name
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"summary template: unknown placeholder {exc}") from None
        return value


PARAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_PARAM_CHARS = 500


def check_params(params: dict[str, str], max_chars: int = MAX_PARAM_CHARS) -> None:
    """Refuse run parameters that could reach a header or swamp every message (issue 11)."""
    for name, value in params.items():
        if not PARAM_NAME.match(name):
            raise ValueError(f"parameter name {name[:64]!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if len(value) > max_chars:
            raise ValueError(f"parameter {name!r} is longer than {max_chars} characters")
        if has_control(value):
            raise ValueError(f"parameter {name!r} contains line breaks or control characters")


def render_summary(template: str, *, name: str, period: str, rows: int, params: dict[str, str]) -> str:
    """The summary line; a ``{params[x]}`` the run was not given renders empty, never fails.
    Parameter values lose control characters and are cut, whichever path gave them (API,
    triggers, CLI), so a summary never carries a line break into a message."""
    safe = {k: without_control(str(v), MAX_PARAM_CHARS) for k, v in params.items()}
    return without_control(template.format(name=name, period=period, rows=rows, params=defaultdict(str, safe)))


def redacted_url(url: str) -> str:
    """``url`` without userinfo and with every query value replaced (``${env:…}`` kept)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return REDACTED
    netloc = (
        (f"{REDACTED}@" if parts.username or parts.password else "") + (f"[{host}]" if ":" in host else host) + port
    )
    query = urlencode(
        [(k, v if SECRET_REF.fullmatch(v) else REDACTED) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="${}:",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redacted_definition(definition: ReportDefinition) -> dict[str, Any]:
    """The definition as JSON with http-source header values, URL userinfo and query values
    (and the heartbeat URL's) redacted; ``${env:NAME}`` references are shown as written."""
    doc = definition.model_dump(mode="json")
    source = doc.get("source") or {}
    if source.get("type") == "http":
        source["url"] = redacted_url(source["url"])
        source["headers"] = {k: v if SECRET_REF.fullmatch(v) else REDACTED for k, v in source["headers"].items()}
    if doc.get("heartbeat_url"):
        doc["heartbeat_url"] = redacted_webhook(doc["heartbeat_url"])  # the check's id is its secret
    recipients = doc.get("recipients") or {}
    recipients["slack"] = [redacted_webhook(t) for t in recipients.get("slack", [])]
    return doc


def redacted_webhook(target: str) -> str:
    """A webhook or ping URL is a credential in its path: show only its scheme and host."""
    scheme, sep, rest = target.partition("://")
    if sep and scheme in {"http", "https"}:
        return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}/{REDACTED}"
    return target


class DefinitionError(Exception):
    """A definitions file is invalid; ``problems`` are human-readable lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def format_errors(report_label: str, error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(report)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"report {report_label}: {where}: {message}")
    return lines


def parse_definitions(document: object) -> list[ReportDefinition]:
    """Validate a whole document (``{"reports": [...]}``); raise with every problem found."""
    if not isinstance(document, dict) or not isinstance(document.get("reports"), list):
        raise DefinitionError(["the file must be a mapping with a 'reports' list"])
    problems: list[str] = []
    reports: list[ReportDefinition] = []
    seen: set[str] = set()
    for index, raw in enumerate(document["reports"]):
        label = f"#{index + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label = f"{raw['id']!r}"
        try:
            report = ReportDefinition.model_validate(raw)
        except ValidationError as exc:
            problems.extend(format_errors(label, exc))
            continue
        if report.id in seen:
            problems.append(f"report {label}: id: duplicate report id")
            continue
        seen.add(report.id)
        reports.append(report)
    if problems:
        raise DefinitionError(problems)
    return reports
