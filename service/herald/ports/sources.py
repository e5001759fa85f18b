"""Where a report's content comes from. Sources raise RenderError on any failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from herald.domain.reports import ReportDefinition


@dataclass(frozen=True)
class RenderRequest:
    definition: ReportDefinition
    run_id: str
    period: str
    params: dict[str, str] = field(default_factory=dict)
    summary: str = ""


@dataclass(frozen=True)
class Rendered:
    data: bytes
    content_type: str
    filename: str
    summary: str | None = None  # a source may supply its own summary line
    rows: int = 0


class Source(Protocol):
    def render(self, request: RenderRequest) -> Rendered: ...
