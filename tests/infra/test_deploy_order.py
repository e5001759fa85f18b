"""docs/deploy.md's first deploy, walked step by step against the Terraform module.

Cloud Run refuses to start a revision whose secret has no version, and the services and
the job mount every secret at ``latest``. So, in the order the document gives: the
secret containers exist before a version is added, and every secret a service or job
mounts has a version before the step that creates the services (a full ``terraform
apply``). A targeted apply must create no workload. The oracle is the HCL itself (which
secrets are mounted, by whom) and the document's commands, not a copy of either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.infra.conftest import ROOT, HclDir, first

DOC = ROOT / "docs" / "deploy.md"
STEP = re.compile(r"^(\d+)\. \*\*(.+?)\*\*", re.M)
TARGETED = re.compile(r"terraform apply\b[^\n]*?-target=(\S+)")
FULL = re.compile(r"^\s*terraform apply(?![^\n]*-target)", re.M)
VERSION_ADD = re.compile(r"gcloud secrets versions add (\S+)")
HELPER = re.compile(r"(\w+)\(\) \{[^}]*gcloud secrets versions add \"\$1\"")
WORKLOAD_TYPES = ("google_cloud_run_v2_service", "google_cloud_run_v2_job")


@dataclass
class Step:
    number: int
    title: str
    text: str
    targets: list[str] = field(default_factory=list)
    full_apply: bool = False
    versioned: set[str] = field(default_factory=set)


def first_deploy_steps(text: str) -> list[Step]:
    section = text.split("## First deploy", 1)[1].split("\n## ", 1)[0]
    marks = list(STEP.finditer(section))
    steps = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        body = section[mark.start() : following.start() if following else len(section)]
        step = Step(int(mark.group(1)), mark.group(2), body)
        step.targets = TARGETED.findall(body)
        step.full_apply = bool(FULL.search(body))
        step.versioned = set(VERSION_ADD.findall(body)) - {'"$1"'}
        for helper in HELPER.findall(body):  # add() { ... versions add "$1" ...}; add SECRET value
            step.versioned |= set(re.findall(rf"^\s*{helper} (\S+)", body, re.M))
        steps.append(step)
    return steps


@pytest.fixture(scope="module")
def steps() -> list[Step]:
    found = first_deploy_steps(DOC.read_text())
    assert [s.number for s in found] == list(range(1, len(found) + 1)), "steps are numbered 1, 2, 3…"
    return found


def mounted_secrets(module: HclDir) -> dict[str, list[str]]:
    """secret id -> workloads that mount it (local.secrets entries with an env name)."""
    secrets = first(module.locals()["secrets"])
    return {sid: list(s["workloads"]) for sid, s in secrets.items() if s.get("env") and s.get("workloads")}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _secret_refs(value: Any) -> list[dict[str, Any]]:
    """Every ``secret_key_ref`` block under ``value``."""
    if isinstance(value, dict):
        own = [first(value["secret_key_ref"])] if "secret_key_ref" in value else []
        return own + [r for k, v in value.items() if k != "secret_key_ref" for r in _secret_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _secret_refs(v)]
    return []


def test_every_workload_mounts_secrets_only_from_the_declared_containers(module: HclDir) -> None:
    """The walk below is only as good as "mounted = local.secrets": check that it is."""
    for rtype in WORKLOAD_TYPES:
        (resource,) = module.resources(rtype).values()
        refs = _secret_refs(resource)
        assert refs, f"{rtype} mounts no secret: the walk would prove nothing"
        for ref in refs:
            assert first(ref["secret"]).startswith("${google_secret_manager_secret.main["), ref
            assert first(ref["version"]) == "latest"  # why the version must exist before the revision
        assert "${local.secret_env[" in " ".join(_strings(resource))


def test_secrets_are_versioned_before_anything_mounts_them(steps: list[Step], module: HclDir) -> None:
    mounted = mounted_secrets(module)
    assert len(mounted) >= 5, "the HCL scan found too few secrets to be real"
    containers_at = next((s.number for s in steps if s.targets), None)
    full_at = next((s.number for s in steps if s.full_apply), None)
    assert containers_at is not None, "no step creates the secret containers first (terraform apply -target=…)"
    assert full_at is not None, "no step runs the full terraform apply"
    versioned_before: set[str] = set()
    for step in steps:
        if step.versioned:
            assert step.number > containers_at, f"step {step.number} adds versions before the secrets exist"
        if step.number == full_at:
            break
        versioned_before |= step.versioned
    missing = {sid: who for sid, who in mounted.items() if sid not in versioned_before}
    assert not missing, f"the full apply (step {full_at}) starts workloads mounting unversioned secrets: {missing}"
    assert versioned_before <= set(first(module.locals()["secrets"])), "the doc versions a secret Terraform lacks"


def test_the_targeted_apply_creates_the_secrets_and_no_workload(steps: list[Step], module: HclDir) -> None:
    targets = [t for s in steps for t in s.targets]
    assert targets == ["module.herald.google_secret_manager_secret.main"]
    rtype, name = targets[0].removeprefix("module.herald.").split(".")
    resource = module.resources(rtype)[name]
    # -target also creates what the target depends on: only the APIs may come with it.
    depends = [d for d in _strings(resource.get("depends_on", [])) if d.startswith("${")]
    assert depends and all(d.startswith("${google_project_service.") for d in depends), depends
    refs = [s for s in _strings(resource) if "${" in s]
    assert not [r for r in refs if any(t in r for t in WORKLOAD_TYPES)]


def test_the_secrets_table_lists_every_secret_and_nothing_is_pending(module: HclDir) -> None:
    text = DOC.read_text()
    assert "pending" not in text.lower()
    secrets = first(module.locals()["secrets"])
    table = dict(re.findall(r"^\| `(herald-[a-z0-9-]+)` \|.*\| `?(HERALD_[A-Z_]+)`? \|$", text, re.M))
    assert table == {sid: s["env"] for sid, s in secrets.items()}


def test_the_walk_catches_a_service_started_before_its_secret() -> None:
    """The parser on a wrong order: the full apply comes before the versions."""
    wrong = (
        "## First deploy\n"
        "1. **Secrets**:\n   terraform apply -target=module.herald.google_secret_manager_secret.main\n"
        "2. **All**:\n   ```sh\n   terraform apply\n   ```\n"
        "3. **Values**: `gcloud secrets versions add herald-secret-key --data-file=-`\n"
    )
    steps = first_deploy_steps(wrong)
    assert [s.full_apply for s in steps] == [False, True, False]
    assert steps[2].versioned == {"herald-secret-key"}


def test_the_watchdog_schedule_waits_for_the_first_real_image(module: HclDir) -> None:
    import yaml

    schedule = module.resources("google_cloud_scheduler_job")["watchdog"]
    assert first(schedule["paused"]) == "${local.sample_image}"
    assert "paused" in " ".join(_strings(schedule["lifecycle"]))  # Terraform does not re-pause it later
    sample = first(module.locals()["sample_image"])
    assert "us-docker.pkg.dev/cloudrun/container/" in sample
    example = (ROOT / "terraform" / "environments" / "staging" / "terraform.tfvars.example").read_text()
    assert 'image                 = "us-docker.pkg.dev/cloudrun/container/hello:latest"' in example

    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    resume = {s["id"]: s for s in build["steps"]}["resume-watchdog"]
    assert resume["waitFor"] == ["deploy-watchdog-job"]
    script = "\n".join(resume["args"])
    assert "gcloud scheduler jobs resume herald-watchdog" in script
    # Shell variables are $$-escaped: Cloud Build would substitute (or reject) a bare $name.
    assert not re.findall(r"(?<!\$)\$(?!\$|\{_|PROJECT_ID|COMMIT_SHA|BUILD_ID)\w", script)
    role = module.resources("google_project_iam_custom_role")["deployer_scheduler"]
    assert set(first(role["permissions"])) == {"cloudscheduler.jobs.get", "cloudscheduler.jobs.enable"}


def test_artifact_registry_deletes_old_images_and_keeps_the_recent_ones(module: HclDir) -> None:
    repo = module.resources("google_artifact_registry_repository")["main"]
    policies = {first(p["id"]): p for p in repo["cleanup_policies"]}
    actions = {first(p["action"]) for p in policies.values()}
    assert actions == {"KEEP", "DELETE"}, "a KEEP-only cleanup never deletes anything"
    assert first(repo["cleanup_policy_dry_run"]) is False
    keep = first(policies["keep-recent"]["most_recent_versions"])
    assert first(keep["keep_count"]) >= 10  # rollback needs recent images (docs/deploy.md)
    deletes = [first(p["condition"]) for p in policies.values() if first(p["action"]) == "DELETE"]
    assert {first(c["tag_state"]) for c in deletes} == {"UNTAGGED", "ANY"}
