"""Print the README's settings table from settings.py itself (`python tools/settings_table.py`).

Each row: the environment variable, its default and the comment beside the field (or
the comment block above it). tests/unit/test_readme.py fails when README.md lacks a
setting, so the table is regenerated whenever a setting is added.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SETTINGS = Path(__file__).resolve().parents[1] / "service" / "herald" / "settings.py"


def rows() -> list[tuple[str, str, str]]:
    source = SETTINGS.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    out = []
    for node in settings.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        line = lines[node.lineno - 1]
        comment = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        if not comment:  # fall back to the comment block just above
            above = []
            index = node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#"):
                above.insert(0, lines[index].strip().lstrip("# ").strip())
                index -= 1
            comment = " ".join(above)
        default = ast.get_source_segment(source, node.value) if node.value is not None else "(required)"
        out.append((f"HERALD_{node.target.id.upper()}", f"`{default}`", comment.replace("|", "\\|")))
    return out


def table() -> str:
    head = "| variable | default | meaning |\n|---|---|---|\n"
    return head + "\n".join(f"| `{name}` | {default} | {meaning} |" for name, default, meaning in rows())


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
