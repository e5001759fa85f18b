"""Tables from data files (CSV, JSON): what a pdf source lays out and what `herald apply`
stores inline with a definition. Pure parsing; errors name the file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from herald.domain.errors import RenderError

Table = tuple[list[str], list[list[str]]]


def load_csv(path: Path) -> Table:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = list(csv.reader(handle))
    if not reader or not any(cell.strip() for cell in reader[0]):
        raise RenderError(f"data file {path.name}: no header row")
    return reader[0], [row for row in reader[1:] if any(cell.strip() for cell in row)]


def load_json(path: Path) -> Table:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise RenderError(f"data file {path.name}: invalid JSON ({exc})") from None
    if isinstance(document, dict) and isinstance(document.get("columns"), list):
        return [str(c) for c in document["columns"]], list(document.get("rows") or [])
    if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
        raise RenderError(f"data file {path.name}: expected a list of objects (or {{columns, rows}})")
    columns: list[str] = []
    for item in document:
        columns.extend(key for key in item if key not in columns)
    return columns, [[item.get(c) for c in columns] for item in document]


LOADERS = {".csv": load_csv, ".json": load_json}
