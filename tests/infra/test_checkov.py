"""checkov over terraform/ with Herald's own policies (terraform/policies/*.yaml).

No failure may be left unexplained: the scan must be clean, and every skip must carry
its reason in the code (`# checkov:skip=ID:reason`). A deliberately insecure fixture
proves each custom policy actually fails what it is meant to catch."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import ROOT, TERRAFORM, run_tool

POLICIES = TERRAFORM / "policies"
INSECURE = Path(__file__).parent / "fixtures" / "insecure"


def _policy_ids() -> list[str]:
    return sorted(yaml.safe_load(p.read_text())["metadata"]["id"] for p in POLICIES.glob("*.yaml"))


def _checkov(directory: Path, *extra: str) -> list[dict[str, Any]]:
    result = run_tool(
        "checkov",
        "--directory",
        directory,
        "--framework",
        "terraform",
        "secrets",
        "--skip-download",
        "--external-checks-dir",
        POLICIES,
        "--output",
        "json",
        *extra,
    )
    # Exit 1 means "checks failed"; anything else is checkov itself failing.
    assert result.returncode in (0, 1), f"checkov did not run:\n{result.stderr[-3000:]}"
    parsed = json.loads(result.stdout)
    return parsed if isinstance(parsed, list) else [parsed]


@pytest.fixture(scope="module")
def scan() -> list[dict[str, Any]]:
    return _checkov(TERRAFORM)


def test_herald_policies_exist() -> None:
    assert _policy_ids() == [f"CKV2_HERALD_{n}" for n in range(1, 7)]


def test_terraform_passes_checkov_with_no_unexplained_failure(scan: list[dict[str, Any]]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for report in scan
        for c in report["results"].get("failed_checks", [])
    ]
    assert failed == [], "checkov failures (fix them, or skip in the resource with a reason):\n" + "\n".join(failed)
    assert all(report["summary"]["parsing_errors"] == 0 for report in scan)


def test_herald_policies_ran_against_real_resources(scan: list[dict[str, Any]]) -> None:
    # CKV2_HERALD_5 and _6 are guards: Herald grants bucket IAM only through for_each
    # (which checkov does not expand) and creates no secret versions at all, so they have
    # nothing to pass; the insecure fixture below shows they fail what they must.
    passed = {c["check_id"] for report in scan for c in report["results"].get("passed_checks", [])}
    expected = {"CKV2_HERALD_1", "CKV2_HERALD_2", "CKV2_HERALD_3", "CKV2_HERALD_4"}
    assert expected <= passed, f"policies that matched no resource: {expected - passed}"


def test_every_skip_in_the_code_carries_a_reason(scan: list[dict[str, Any]]) -> None:
    skips = []
    for path in TERRAFORM.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                m = re.search(r"checkov:skip=([A-Z0-9_]+):(.*)$", line)
                assert m and len(m.group(2).strip()) >= 30, f"{path.relative_to(ROOT)}: skip without a reason: {line}"
                skips.append(m.group(1))
    skipped = {c["check_id"] for report in scan for c in report["results"].get("skipped_checks", [])}
    assert skipped == set(skips), "every skip checkov applied must be one written in the code"
    assert not skipped & set(_policy_ids()), "Herald's own policies are never skipped"


def test_each_herald_policy_fails_the_insecure_fixture() -> None:
    reports = _checkov(INSECURE, "--check", ",".join(_policy_ids()))
    failed: dict[str, set[str]] = {}
    for report in reports:
        for c in report["results"].get("failed_checks", []):
            failed.setdefault(c["check_id"], set()).add(c["resource"])
    assert failed == {
        "CKV2_HERALD_1": {"google_pubsub_subscription.push_without_oidc"},
        "CKV2_HERALD_2": {"google_cloud_tasks_queue.unbounded_retries", "google_cloud_tasks_queue.no_retry_config"},
        "CKV2_HERALD_3": {
            "google_cloud_run_v2_service_iam_member.public_worker",
            "google_cloud_run_v2_service_iam_member.public_admin",
        },
        "CKV2_HERALD_4": {"google_storage_bucket.public_bucket"},
        "CKV2_HERALD_5": {"google_storage_bucket_iam_member.public_read"},
        "CKV2_HERALD_6": {"google_secret_manager_secret_version.literal"},
    }


# Shapes of real credentials: SendGrid keys, Slack tokens, PEM private keys, Google API
# keys, service-account key JSON. checkov's secrets scan knows only some of these.
SECRET_SHAPES = re.compile(
    r"SG\.[\w-]{16,}\.[\w-]{16,}|xox[abposr]-[\w-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|AIza[\w-]{35}|\"private_key_id\"|hooks\.slack\.com/services/T\w+"
)


def test_no_secret_literal_anywhere_in_terraform() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in [*TERRAFORM.rglob("*.tf"), *TERRAFORM.rglob("*.tfvars*")]
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if SECRET_SHAPES.search(line)
    ]
    assert offenders == []


def test_only_the_ingress_service_is_public(module: Any) -> None:
    # CKV2_HERALD_3 cannot see members produced by for_each; this covers them: the only
    # allUsers literal in the module is the ingress public_invoker.
    public = []
    for rtype, named in module.all_resources().items():
        for name, body in named.items():
            if "allUsers" in json.dumps(body) or "allAuthenticatedUsers" in json.dumps(body):
                public.append(f"{rtype}.{name}")
    assert public == ["google_cloud_run_v2_service_iam_member.public_invoker"]
    body = module.resources("google_cloud_run_v2_service_iam_member")["public_invoker"]
    assert body["name"] == ['${google_cloud_run_v2_service.main["ingress"].name}']
