"""The structure shows itself: only the composition root imports adapters.

The composition root is herald.bootstrap, herald.bootstrap_gcp, herald.store_factory (the
store alone, for `herald apply`) and the CLI's entrypoints (with `herald serve`'s worker
processes); everything else — domain, ports, services, web — sees ports only. Read from the
source, not from the running code."""

from __future__ import annotations

import ast
from pathlib import Path

HERALD = Path(__file__).resolve().parents[2] / "service" / "herald"
COMPOSITION_ROOT = {"bootstrap.py", "bootstrap_gcp.py", "store_factory.py", "cli.py", "worker_processes.py"}
# The embedded worker's dispatcher is the one web module that speaks to the embedded queue's types.
KNOWN = {"web/dispatch.py"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_only_the_composition_root_imports_adapters():
    offenders = {}
    for path in HERALD.rglob("*.py"):
        relative = path.relative_to(HERALD).as_posix()
        if relative.startswith("adapters/") or relative in COMPOSITION_ROOT or relative in KNOWN:
            continue
        adapters = sorted(m for m in imports(path) if m.startswith("herald.adapters"))
        if adapters:
            offenders[relative] = adapters
    assert offenders == {}


def test_services_and_the_domain_never_import_the_composition_root_or_the_web():
    for layer in ("domain", "ports", "services"):
        for path in (HERALD / layer).rglob("*.py"):
            bad = [m for m in imports(path) if m.startswith(("herald.bootstrap", "herald.web", "herald.cli"))]
            assert bad == [], f"{path.relative_to(HERALD)} imports {bad}"
