"""What the admin pages show, computed from records (no Flask here): schedules with their
DST caveats, one row per delivery, totals and rates per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from herald.domain.records import Delivery, Run
from herald.domain.reports import Schedule
from herald.domain.schedules import next_fire_times
from herald.domain.states import DELIVERY_FAILED, DELIVERY_OPEN, DeliveryStatus, run_outcome
from herald.domain.strict import without_control

DST_HORIZON = timedelta(days=400)
DST_EXAMPLES = 3  # affected slots named per transition; the rest are counted


def fmt(value: datetime | str | None, zone: str = "UTC") -> str:
    """'2026-11-02 07:00 GMT' in ``zone``; '' for nothing; unparseable text as is."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = int((end - start).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


# Schedules ------------------------------------------------------------------------------
def _transitions(zone: ZoneInfo, start: datetime, horizon: timedelta) -> list[tuple[datetime, timedelta, timedelta]]:
    """UTC offset changes of ``zone`` in [start, start + horizon]: (instant, before, after)."""
    found = []
    day = timedelta(days=1)
    t = start
    while t < start + horizon:
        before, after = t.astimezone(zone).utcoffset(), (t + day).astimezone(zone).utcoffset()
        if before != after and before is not None and after is not None:
            lo, hi = t, t + day
            while hi - lo > timedelta(seconds=1):  # bisect to the second
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            found.append((hi.replace(microsecond=0), before, after))
        t += day
    return found


def dst_warnings(schedule: Schedule, now: datetime, horizon: timedelta = DST_HORIZON) -> list[str]:
    """Slots within ``horizon`` whose wall time a DST change skips or repeats, and what Herald
    does with them (herald.domain.schedules: a skipped time fires shifted by the gap; a
    repeated one fires once, at its first occurrence)."""
    zone = ZoneInfo(schedule.timezone)
    notes = []
    for instant, before, after in _transitions(zone, now, horizon):
        wall_from = (instant + min(before, after)).replace(tzinfo=None)
        wall_to = (instant + max(before, after)).replace(tzinfo=None)
        walls = croniter(schedule.cron, wall_from - timedelta(seconds=1), ret_type=datetime)
        hit: list[datetime] = []
        for _ in range(10_000):
            wall = walls.get_next(datetime)
            if wall >= wall_to:
                break
            hit.append(wall)
        if not hit:
            continue
        shown = ", ".join(w.strftime("%H:%M") for w in hit[:DST_EXAMPLES])
        more = f" and {len(hit) - DST_EXAMPLES} more" if len(hit) > DST_EXAMPLES else ""
        day = hit[0].strftime("%a %d %b %Y")
        if after > before:
            fired = hit[0].replace(tzinfo=zone, fold=0).astimezone(UTC)
            notes.append(
                f"{day}: clocks go forward, so {shown}{more} do not exist in {schedule.timezone}; "
                f"Herald fires them shifted by the gap (the first at {fmt(fired, schedule.timezone)} "
                f"= {fmt(fired)}), once per instant."
            )
        else:
            notes.append(
                f"{day}: clocks go back, so {shown}{more} happen twice in {schedule.timezone}; "
                "Herald fires each once, at its first occurrence."
            )
    return notes


@dataclass
class ScheduleView:
    cron: str
    timezone: str
    upcoming: list[tuple[str, str]] = field(default_factory=list)  # (in its zone, in UTC)
    dst: list[str] = field(default_factory=list)


def schedule_view(schedule: Schedule, next_fire_at: datetime | None, now: datetime, count: int = 3) -> ScheduleView:
    view = ScheduleView(schedule.cron, schedule.timezone)
    if next_fire_at is not None:
        times = [next_fire_at, *next_fire_times(schedule, next_fire_at, count - 1)]
        view.upcoming = [(fmt(t, schedule.timezone), fmt(t)) for t in times]
    view.dst = dst_warnings(schedule, now)
    return view


# Deliveries -----------------------------------------------------------------------------
def _get(events: dict[str, Any], *paths: str) -> Any:
    """The first value found at one of the dotted ``paths`` (the feedback shape is young)."""
    for path in paths:
        value: Any = events
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, "", {}):
            return value
    return None


def _count(value: Any) -> int:
    if isinstance(value, dict):
        value = value.get("count")
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def delivery_row(d: Delivery) -> dict[str, Any]:
    """One delivery as the report and the CSV show it; every events field is optional."""
    ev = d.events if isinstance(d.events, dict) else {}
    raw_downloads = ev.get("downloads")
    downloads: dict[str, Any] = raw_downloads if isinstance(raw_downloads, dict) else {}
    bounced = d.status == DeliveryStatus.BOUNCED or bool(_get(ev, "bounced_at", "first_bounced_at", "bounce.at"))
    resend = next((e for e in reversed(d.attempt_log) if e.get("result") == "resend"), None)
    return {
        "id": d.id,
        "recipient": d.recipient,
        "channel": d.channel,
        "status": str(d.status),
        "attempts": d.attempts,
        "sent_at": d.delivered_at,  # accepted by the provider
        "delivered_at": _get(ev, "delivered_at", "first_delivered_at", "delivered.first_at", "delivered.at"),
        "bounced_at": _get(ev, "bounced_at", "first_bounced_at", "bounce.at", "bounced.at") if bounced else None,
        "bounce_reason": _get(ev, "bounce_reason", "bounce.reason", "bounced.reason", "reason") if bounced else None,
        "opened_at": _get(ev, "opened_at", "first_opened_at", "opens.first_at", "open.first_at"),
        "opens_human": _count(_get(ev, "opens_human", "human_opens", "opens.human", "open_count")),
        "opens_machine": _count(_get(ev, "opens_machine", "machine_opens", "opens.machine")),
        "clicked_at": _get(ev, "clicked_at", "first_clicked_at", "clicks.first_at", "click.first_at"),
        "clicks": _count(_get(ev, "clicks", "click_count", "clicks.count")),
        "downloads": _count(downloads),
        "downloaded_first_at": downloads.get("first_at"),
        "downloaded_last_at": downloads.get("last_at"),
        "failed": d.status in DELIVERY_FAILED and d.status != DeliveryStatus.BOUNCED,
        "last_error": d.last_error,
        "error_kind": d.error_kind,
        "suppressed": d.status == DeliveryStatus.SUPPRESSED,
        "resent_by": resend.get("by") if resend else None,
        "resent_at": resend.get("at") if resend else None,
        "updated_at": d.updated_at,
    }


CSV_COLUMNS = [
    "run_id",
    "recipient",
    "channel",
    "status",
    "attempts",
    "sent_at",
    "delivered_at",
    "bounced_at",
    "bounce_reason",
    "opened_at",
    "opens_human",
    "opens_machine",
    "clicked_at",
    "clicks",
    "downloads",
    "downloaded_first_at",
    "downloaded_last_at",
    "last_error",
    "resent_by",
    "resent_at",
]


# A cell a spreadsheet would run as a formula (a bounce reason is written by a stranger's
# mail server). OWASP's rule: prefix such cells with a single quote.
# https://owasp.org/www-community/attacks/CSV_Injection
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def csv_values(d: Delivery) -> list[str]:
    row = {**delivery_row(d), "run_id": d.run_id}
    out = []
    for column in CSV_COLUMNS:
        value = row.get(column)
        text = value.isoformat() if isinstance(value, datetime) else "" if value is None else str(value)
        out.append(csv_cell(text))
    return out


def plain(text: str) -> str:
    """One line of text: control characters become spaces, ends trimmed."""
    return without_control(text).strip()


# Runs -----------------------------------------------------------------------------------
def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def run_totals(run: Run, counts: dict[str, int]) -> dict[str, Any]:
    """Counts by status and the rates a reader asks for, from ``delivery_counts``."""
    n = {s.value: counts.get(s.value, 0) for s in DeliveryStatus}
    total = sum(counts.values())
    suppressed = n["suppressed"]
    reached = n["sent"] + n["delivered"]  # accepted and not (yet) bounced
    accepted = reached + n["bounced"] + n["dropped"]
    failed = n["failed"] + n["bounced"] + n["dropped"]
    open_ = sum(n[s.value] for s in DELIVERY_OPEN)
    attempted = total - suppressed
    now_outcome = run_outcome(reached, failed).value if attempted and not open_ else None
    return {
        "total": total,
        "counts": n,
        "accepted": accepted,
        "failed": failed,
        "open": open_,
        "delivered_rate": _pct(n["delivered"], accepted),
        "accepted_rate": _pct(accepted, attempted),
        "bounce_rate": _pct(n["bounced"], accepted),
        "failure_rate": _pct(failed, attempted),
        # The ledger keeps the outcome the run settled with; after a resend the live counts may differ.
        "now_outcome": now_outcome if now_outcome and now_outcome != run.status.value else None,
    }


def engagement(deliveries: list[Delivery]) -> dict[str, Any]:
    rows = [delivery_row(d) for d in deliveries]
    accepted = sum(1 for r in rows if r["status"] in ("sent", "delivered", "bounced", "dropped"))
    opened = sum(1 for r in rows if r["opened_at"] or r["opens_human"] or r["opens_machine"])
    human = sum(1 for r in rows if r["opens_human"])
    clicked = sum(1 for r in rows if r["clicked_at"] or r["clicks"])
    downloaded = sum(1 for r in rows if r["downloads"])
    return {
        "opened": opened,
        "opened_human": human,
        "clicked": clicked,
        "downloaded": downloaded,
        "open_rate": _pct(opened, accepted),
        "human_open_rate": _pct(human, accepted),
        "click_rate": _pct(clicked, accepted),
        "download_rate": _pct(downloaded, accepted),
    }
