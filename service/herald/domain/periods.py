"""Reporting periods: the label a run reports on, derived from its slot in the report's zone."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from herald.domain.reports import Period


def period_label(kind: Period, instant: datetime, timezone: str) -> str:
    """``2026-11-29`` (day), ``2026-W48`` (week), ``2026-11`` (month), or the previous one."""
    local: date = instant.astimezone(ZoneInfo(timezone)).date()
    if kind == "day":
        return local.isoformat()
    if kind == "previous_day":
        return (local - timedelta(days=1)).isoformat()
    if kind == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    if kind == "month":
        return f"{local.year}-{local.month:02d}"
    first = local.replace(day=1) - timedelta(days=1)  # previous_month
    return f"{first.year}-{first.month:02d}"
