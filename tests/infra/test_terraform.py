"""Terraform: canonical format, Terraform's own loader, and the cross-file checks that
`terraform validate` would make if the provider registry were reachable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.infra.conftest import ENVIRONMENTS, MODULE, TERRAFORM, HclDir, first, run_tool


def test_fmt_check_passes() -> None:
    result = run_tool("python", TERRAFORM / "tools" / "tf.py", "fmt", "--check", TERRAFORM)
    assert result.returncode == 0, f"terraform fmt -check failed (run `make tf-fmt`):\n{result.stdout}{result.stderr}"


def test_every_root_loads_with_terraforms_config_loader() -> None:
    result = run_tool("python", TERRAFORM / "tools" / "tf.py", "parse", *ENVIRONMENTS, MODULE)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"
    assert result.stdout.count("configuration loads") == 3


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _expressions(d: HclDir) -> list[str]:
    return [s for parsed in d.files.values() for s in _strings(parsed) if "${" in s]


def test_module_references_resolve(module: HclDir) -> None:
    exprs = _expressions(module)
    variables = set(module.variables())
    local_names = set(module.locals())
    resources = {f"{t}.{n}" for t, named in module.all_resources().items() for n in named}
    data = {f"{t}.{n}" for block in module.blocks("data") for t, named in block.items() for n in named}

    used_vars = {m for e in exprs for m in re.findall(r"\bvar\.([a-z0-9_]+)", e)}
    used_locals = {m for e in exprs for m in re.findall(r"\blocal\.([a-z0-9_]+)", e)}
    used_resources = {m for e in exprs for m in re.findall(r"(?<![\w.])(google_[a-z0-9_]+\.[a-z0-9_]+)", e)}
    used_data = {m for e in exprs for m in re.findall(r"\bdata\.(google_[a-z0-9_]+\.[a-z0-9_]+)", e)}

    assert len(used_resources) > 12 and len(used_locals) > 10, "the reference scan found too little to be real"
    assert used_vars - variables == set(), "undeclared variables"
    assert used_locals - local_names == set(), "undeclared locals"
    assert used_resources - resources == set(), "references to resources that do not exist"
    assert used_data - data == set(), "references to data sources that do not exist"
    assert variables - used_vars == set(), "declared but unused variables"


def test_variables_are_typed_and_described_and_outputs_described(module: HclDir) -> None:
    for name, body in module.variables().items():
        assert first(body.get("description")), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"
    for name, body in module.outputs().items():
        assert first(body.get("description")), f"output {name} has no description"


def test_environment_roots_are_thin_and_call_the_module_correctly(hcl: dict[str, HclDir], module: HclDir) -> None:
    variables = module.variables()
    required = {name for name, body in variables.items() if "default" not in body}
    for env in ("staging", "prod"):
        root = hcl[env]
        assert root.all_resources() == {}, f"{env}: resources belong in the module, not the root"
        calls = {name: body for block in root.blocks("module") for name, body in block.items()}
        assert set(calls) == {"herald"}
        call = calls["herald"]
        assert first(call["source"]) == "../../modules/herald"
        args = {k for k in call if k not in {"source", "__start_line__", "__end_line__"}}
        assert args - set(variables) == set(), f"{env}: arguments the module does not declare"
        assert required - args == set(), f"{env}: required module variables not passed"
        assert first(call["environment"]) == env
        backends = [first(t).get("backend") for t in root.blocks("terraform") if first(t).get("backend")]
        assert backends and "gcs" in json.dumps(backends), f"{env}: no GCS backend block"


def test_primary_resources_are_named_main(module: HclDir) -> None:
    for rtype in (
        "google_cloud_run_v2_service",
        "google_cloud_run_v2_job",
        "google_cloud_tasks_queue",
        "google_firestore_database",
        "google_storage_bucket",
        "google_secret_manager_secret",
    ):
        assert "main" in module.resources(rtype), rtype
