"""Paths into an event: the small syntax report triggers use to read a payload.

A path starts at the whole event ``{id, type, occurred_at, data}``:

- ``$.data.account.id``: a field (the leading ``$`` is optional: ``data.account.id``);
- ``$.data.contacts[0].email``: a list item by position;
- ``$.data.contacts[*].email``: every item of a list (the path then yields many values).

Field names are letters, digits, ``_`` and ``-``. A missing field yields nothing; it is
never an error here (the caller decides whether an absent value matters).
"""

from __future__ import annotations

import re
from typing import Any

WILDCARD = None
Part = str | int | None  # field name, list index, or WILDCARD
_TOKEN = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\*|\d+)\]")


def parse_path(text: str) -> tuple[Part, ...]:
    source = text.strip()
    rest = source[1:] if source.startswith("$") else "." + source
    parts: list[Part] = []
    pos = 0
    while pos < len(rest):
        match = _TOKEN.match(rest, pos)
        if match is None:
            raise ValueError(f"invalid path {text!r} near {rest[pos:]!r} (use $.data.field, [0] or [*])")
        name, index = match.groups()
        parts.append(name if name is not None else (WILDCARD if index == "*" else int(index)))
        pos = match.end()
    if not parts:
        raise ValueError(f"empty path {text!r}")
    return tuple(parts)


def is_path(value: str) -> bool:
    """In a trigger's ``params``, a value starting with ``$`` is a path; anything else is literal."""
    return value.startswith("$")


def has_wildcard(parts: tuple[Part, ...]) -> bool:
    return WILDCARD in parts


def resolve(parts: tuple[Part, ...], document: Any) -> list[Any]:
    """Every value the path reaches (at most one without a wildcard)."""
    values = [document]
    for part in parts:
        found: list[Any] = []
        for value in values:
            if isinstance(part, str):
                if isinstance(value, dict) and part in value:
                    found.append(value[part])
            elif part is WILDCARD:
                if isinstance(value, list):
                    found.extend(value)
            elif isinstance(value, list) and -len(value) <= part < len(value):
                found.append(value[part])
        values = found
    return values
