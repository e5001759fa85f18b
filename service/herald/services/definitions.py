"""Definitions as code: load YAML files, plan against the store, apply, keep a history.

A definitions file (or a folder of them) is the truth for the reports it names:

- everything a definition refers to is resolved against the YAML file at load time and
  stored with it (a pdf ``data_file`` becomes inline ``data``; a relative ``file`` path
  becomes absolute), so every backend renders the same thing whatever its working folder;
- the plan says what applying would do (added / changed / disabled / unchanged) before
  anything is written;
- reports in the store that the files no longer name are disabled, never deleted (their
  runs and delivery log stay, and adding them back re-enables them);
- each applied change is kept in the store (kind ``definition-change``): who, when, what.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from herald.domain.reports import (
    DefinitionError,
    FileSource,
    PdfSource,
    ReportDefinition,
    TableData,
    parse_definitions,
)
from herald.domain.schedules import next_fire_time
from herald.ports.store import Store, StoredReport

CHANGE_KIND = "definition-change"
MAX_HISTORY = 10_000  # changes kept per report (probing stops there)
Action = Literal["add", "change", "disable", "unchanged"]


# Loading ----------------------------------------------------------------------------
def definition_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``*.yaml`` / ``*.yml`` files of a folder (sorted, not recursive)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise DefinitionError([f"{path}: no *.yaml or *.yml definition files in this folder"])
        return files
    return [path]


def load_file(path: Path, root: Path | None = None) -> list[ReportDefinition]:
    """One file, validated as a whole, references resolved; every problem in one DefinitionError.

    What a definition refers to must lie under ``root`` (HERALD_SOURCE_ROOT; default the
    YAML file's folder), as the file renderer confines its reads (issue 11)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionError([f"{path}: cannot read ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DefinitionError([f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    reports = parse_definitions(document)
    base_dir = path.resolve().parent
    problems: list[str] = []
    resolved = []
    for report in reports:
        try:
            resolved.append(resolve_references(report, base_dir, root))
        except ValueError as exc:
            problems.append(f"report {report.id!r}: {exc}")
    if problems:
        raise DefinitionError(problems)
    return resolved


def load(path: Path, root: Path | None = None) -> list[ReportDefinition]:
    """A file or a folder of files; report ids are unique across all of them."""
    problems: list[str] = []
    reports: list[ReportDefinition] = []
    seen: dict[str, Path] = {}
    folder = path.is_dir()
    for file in definition_files(path):
        try:
            loaded = load_file(file, root)
        except DefinitionError as exc:  # in a folder, each problem names its file
            problems.extend(
                f"{file.name}: {line}" if folder and not line.startswith(str(file)) else line for line in exc.problems
            )
            continue
        for report in loaded:
            if report.id in seen:
                problems.append(f"{file.name}: report {report.id!r}: id: already defined in {seen[report.id].name}")
                continue
            seen[report.id] = file
            reports.append(report)
    if problems:
        raise DefinitionError(problems)
    return reports


def resolve_references(report: ReportDefinition, base_dir: Path, root: Path | None = None) -> ReportDefinition:
    """Make the definition self-contained: what it refers to, read relative to ``base_dir``.

    A ``data_file`` with ``{period}`` in its name differs per run, so it cannot be read
    now: it becomes an absolute path instead (it renders only where that path exists)."""
    source = report.source
    confine = (root or base_dir).resolve()
    if isinstance(source, PdfSource) and source.data_file is not None:
        path = Path(source.data_file)
        if not path.is_absolute():
            path = base_dir / path
        _confined("source.data_file", path, confine)
        if "{period}" in source.data_file:
            new_source: PdfSource | FileSource = source.model_copy(update={"data_file": str(path)})
        else:
            columns, rows = read_table(path)
            table = TableData(columns=columns, rows=rows)
            new_source = PdfSource(type="pdf", title=source.title, data=table)
        return report.model_copy(update={"source": new_source})
    if isinstance(source, FileSource):
        path = Path(source.path) if Path(source.path).is_absolute() else base_dir / source.path
        _confined("source.path", path, confine)
        return report.model_copy(update={"source": source.model_copy(update={"path": str(path)})})
    return report


def _confined(field_name: str, path: Path, root: Path) -> None:
    # {period} is not a path component that can climb out: check the folder it names.
    probe = Path(str(path).replace("{period}", "period"))
    if not probe.resolve().is_relative_to(root):
        raise ValueError(f"{field_name}: {path} is outside {root} (set HERALD_SOURCE_ROOT to allow another folder)")


def read_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    """A CSV (header row first) or JSON (list of objects, or ``{columns, rows}``) data file,
    read as the pdf renderer reads it, so inline data renders exactly as the file did."""
    from herald.domain.errors import RenderError
    from herald.domain.tables import LOADERS

    loaders = LOADERS
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"source.data_file: {path.name}: use a .csv or .json file")
    if not path.is_file():
        raise ValueError(f"source.data_file: {path} not found (paths are relative to the YAML file)")
    try:
        columns, rows = loader(path)
    except RenderError as exc:
        raise ValueError(f"source.data_file: {exc}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"source.data_file: {path.name}: cannot read ({exc})") from None
    return [str(c) for c in columns], [list(row) if isinstance(row, list) else [row] for row in rows]


# Planning ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    action: Action
    definition: ReportDefinition  # what is (or would be) stored
    next_fire_at: datetime | None
    fields: tuple[str, ...] = ()  # top-level fields that differ from the stored definition
    before: ReportDefinition | None = None


@dataclass(frozen=True)
class Plan:
    changes: list[Change] = field(default_factory=list)

    def of(self, action: Action) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    def summary(self) -> str:
        return ", ".join(f"{len(self.of(a))} {label}" for a, label in _LABELS.items())


_LABELS: dict[Action, str] = {"add": "added", "change": "changed", "disable": "disabled", "unchanged": "unchanged"}


def initial_fire_time(report: ReportDefinition, now: datetime) -> datetime | None:
    if report.schedule is None or not report.enabled:
        return None
    return next_fire_time(report.schedule, now)


def next_fire_for(current: StoredReport | None, report: ReportDefinition, now: datetime) -> datetime | None:
    """A schedule keeps its next fire time unless the schedule (or enabled) changed."""
    unchanged = (
        current is not None
        and current.definition.schedule == report.schedule
        and current.definition.enabled == report.enabled
        and current.next_fire_at is not None
    )
    return current.next_fire_at if unchanged and current else initial_fire_time(report, now)


def changed_fields(before: ReportDefinition, after: ReportDefinition) -> tuple[str, ...]:
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    return tuple(name for name in new if old.get(name) != new.get(name))


def plan(
    current: Iterable[StoredReport], definitions: Sequence[ReportDefinition], now: datetime, *, prune: bool = True
) -> Plan:
    """What applying ``definitions`` over ``current`` would do; ``prune`` disables the rest."""
    stored = {s.definition.id: s for s in current}
    changes = []
    for report in definitions:
        existing = stored.get(report.id)
        next_fire = next_fire_for(existing, report, now)
        if existing is None:
            changes.append(Change("add", report, next_fire))
            continue
        fields = changed_fields(existing.definition, report)
        action: Action = "change" if fields else "unchanged"
        changes.append(Change(action, report, next_fire, fields, existing.definition))
    if prune:
        named = {r.id for r in definitions}
        for report_id in sorted(set(stored) - named):
            existing = stored[report_id]
            if existing.definition.enabled:
                off = existing.definition.model_copy(update={"enabled": False})
                changes.append(Change("disable", off, None, ("enabled",), existing.definition))
    return Plan(changes)


# Applying ---------------------------------------------------------------------------
def upsert(store: Store, definitions: Sequence[ReportDefinition], now: datetime) -> list[StoredReport]:
    """Save definitions as given (no pruning, no history): tests, `serve` and benchmarks."""
    saved = []
    for report in definitions:
        next_fire = next_fire_for(store.get_report(report.id), report, now)
        store.save_report(report, next_fire)
        saved.append(StoredReport(report, next_fire))
    return saved


def apply(store: Store, planned: Plan, now: datetime, actor: str, origin: str = "") -> list[StoredReport]:
    """Write every add / change / disable of the plan and keep one history entry for each."""
    saved = []
    for change in planned.changes:
        if change.action != "unchanged":
            store.save_report(change.definition, change.next_fire_at)
            record_change(store, change, now, actor, origin)
        saved.append(StoredReport(change.definition, change.next_fire_at))
    return saved


def digest(report: ReportDefinition) -> str:
    return hashlib.sha256(report.model_dump_json().encode()).hexdigest()[:16]


def record_change(store: Store, change: Change, now: datetime, actor: str, origin: str = "") -> int:
    """Keep (who, when, what) under ``<report id>:<n>``; the create is the claim of number n."""
    doc = {
        "report_id": change.definition.id,
        "action": change.action,
        "actor": actor,
        "at": now.isoformat(),
        "origin": origin,
        "fields": list(change.fields),
        "before": _values(change.before, change.fields),
        "after": _values(change.definition, change.fields) if change.before else None,
        "digest": digest(change.definition),
    }
    for number in range(1, MAX_HISTORY + 1):
        if store.put_inbound_event(CHANGE_KIND, f"{change.definition.id}:{number}", doc, now):
            return number
    raise RuntimeError(f"report {change.definition.id!r}: more than {MAX_HISTORY} recorded changes")


def _values(report: ReportDefinition | None, fields: Sequence[str]) -> dict[str, Any] | None:
    if report is None:
        return None
    dumped = report.model_dump(mode="json")
    return {name: dumped.get(name) for name in fields}


def history(store: Store, report_id: str) -> list[dict[str, Any]]:
    """The recorded changes of one report, oldest first (as long as the store keeps them)."""
    entries = []
    for number in range(1, MAX_HISTORY + 1):
        doc = store.get_inbound_event(CHANGE_KIND, f"{report_id}:{number}")
        if doc is None:
            break
        entries.append({"n": number, **doc})
    return entries


def describe(change: Change) -> str:
    """One line of the printed plan."""
    label = {"add": "+ add", "change": "~ change", "disable": "- disable", "unchanged": "= unchanged"}[change.action]
    detail = f" ({', '.join(change.fields)})" if change.action == "change" else ""
    return f"{label:<12} {change.definition.id}{detail}"
