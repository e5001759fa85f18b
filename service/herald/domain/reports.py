"""Report definitions: what to render, when, and for whom.

Definitions are written in YAML by people, so validation errors must name the report
and the field (``format_errors``) and never surface as a traceback.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator, model_validator

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


class HttpSource(_Strict):
    """A reporting API that returns the rendered file."""

    type: Literal["http"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
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
        lowered = [address.lower() for address in value]
        duplicates = sorted({a for a in lowered if lowered.count(a) > 1})
        if duplicates:
            raise ValueError(f"duplicate recipients: {', '.join(duplicates)}")
        return value

    @field_validator("slack")
    @classmethod
    def _slack_targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not (target.startswith("https://") or target.startswith(("C", "G", "D", "#"))):
                raise ValueError(f"slack target {target!r} must be a channel id or an incoming-webhook URL")
        return value

    def targets(self) -> list[tuple[str, str]]:
        """(channel, recipient) pairs: one delivery each, never one message to many."""
        return [("email", a) for a in self.email] + [("slack", s) for s in self.slack]


class ReportDefinition(_Strict):
    id: Annotated[str, Field(pattern=REPORT_ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    owner: EmailStr
    schedule: Schedule | None = None
    period: Period = "day"
    source: Source
    summary: str = "{name} for {period}"
    recipients: Recipients = Field(default_factory=Recipients)
    slack_file: bool = False  # upload the file itself to Slack channels, not just a link
    heartbeat_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    enabled: bool = True

    @field_validator("summary")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(name="", period="", rows=0, params={})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"summary template: unknown placeholder {exc}") from None
        return value


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
