"""cloudbuild.yaml and the Dockerfile: they parse, every file they reference exists, and
they deploy what Terraform declares with the image the Dockerfile builds."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from tests.infra.conftest import ROOT, HclDir, first

MAKE_TARGET = re.compile(r"^([a-zA-Z0-9_-]+):(?!=)", re.M)


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def _make_targets() -> set[str]:
    texts = [(ROOT / "Makefile").read_text(), *(p.read_text() for p in (ROOT / "mk").glob("*.mk"))]
    return {m for text in texts for m in MAKE_TARGET.findall(text)}


def test_steps_are_named_unique_and_ordered(build: dict[str, Any]) -> None:
    ids = [s["id"] for s in build["steps"]]
    assert len(ids) == len(set(ids)) and all(s.get("name") for s in build["steps"])
    for i, step in enumerate(build["steps"]):
        assert set(step.get("waitFor", [])) <= set(ids[:i]), f"{step['id']} waits for a later or unknown step"
    assert ids[:3] == ["checks", "build", "push"]


def test_every_file_a_step_references_exists(build: dict[str, Any]) -> None:
    for step in build["steps"]:
        assert (ROOT / step.get("dir", ".")).is_dir()
        words = [w for a in step.get("args", []) for w in shlex.split(a, comments=True)]
        for word in words:
            for flag in ("--file=", "-f="):
                if word.startswith(flag):
                    assert (ROOT / word.removeprefix(flag)).is_file(), word
            if word == "make":
                continue
        # `make X Y` in a script: each target exists in the Makefile or mk/*.mk.
        for arg in step.get("args", []):
            for line in str(arg).splitlines():
                m = re.search(r"\bmake\s+([\w\s-]+)$", line.strip())
                if m:
                    assert set(m.group(1).split()) <= _make_targets(), line
        if step["id"] == "build":
            assert words[-1] == "." and (ROOT / "Dockerfile").is_file()


def test_image_is_tagged_with_the_commit_in_artifact_registry(build: dict[str, Any]) -> None:
    image = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}/${_IMAGE_NAME}:$COMMIT_SHA"
    steps = {s["id"]: s for s in build["steps"]}
    assert f"--tag={image}" in steps["build"]["args"]
    assert steps["push"]["args"] == ["push", image]
    assert build["images"] == [image]


def test_every_service_and_the_job_is_deployed(build: dict[str, Any], module: HclDir) -> None:
    deployed = {}
    for step in build["steps"]:
        args = step.get("args", [])
        if args[:1] == ["run"] and "update" in args:
            deployed[(args[1], args[3])] = step
            assert any(a.endswith(":$COMMIT_SHA") and a.startswith("--image=") for a in args)
            # Only the image: env, secrets and IAM are Terraform's.
            owned_by_terraform = ("--set-env", "--update-env", "--set-secrets", "--update-secrets")
            assert not [a for a in args if a.startswith(owned_by_terraform)]
    roles = re.findall(r"\w+", first(module.locals()["roles"]).split("(")[1])
    services = {("services", f"herald-{role}") for role in roles}
    job = ("jobs", first(module.locals()["names"])["watchdog_job"])
    assert set(deployed) == services | {job}
    assert deployed[("services", "herald-worker")]["waitFor"] == ["push"]


def test_artifact_registry_repository_matches_the_substitution(build: dict[str, Any], module: HclDir) -> None:
    repo = module.resources("google_artifact_registry_repository")["main"]
    assert first(repo["repository_id"]) == build["substitutions"]["_REPOSITORY"]


def test_dockerfile_is_slim_non_root_pinned_and_serves_with_gunicorn() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert re.match(r"FROM python:3\.11-slim", instructions[0])
    assert "pip install --no-cache-dir -r requirements.txt" in text
    user = [line for line in instructions if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in {"root", "0"}
    cmd = [line for line in instructions if line.startswith("CMD ")][-1]
    assert "gunicorn" in cmd and "--workers 1 --threads 8 --timeout 0" in cmd
    assert "'herald.web.app:create_app()'" in cmd and ":${PORT}" in cmd
    for line in instructions:
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies a missing path: {src}"
    # Every runtime requirement is pinned exactly.
    reqs = [r for r in (ROOT / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[\w.]+", r) for r in reqs), reqs


def test_dockerignore_keeps_the_context_to_what_the_image_needs() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src.rstrip("/")
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for src in line.split()[1:-1]
    }
    assert copied <= allowed


def test_watchdog_job_runs_a_command_the_image_has(module: HclDir) -> None:
    job = module.resources("google_cloud_run_v2_job")["main"]
    container = first(first(first(job["template"])["template"])["containers"])
    assert first(container["command"]) in (["herald"], "herald")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^herald = "herald\.cli:main"$', pyproject, re.M)
    from herald.cli import main

    assert "watchdog" in main.commands  # the job runs `herald watchdog`


# Report definitions as code (issue 13) ------------------------------------------------
def _script(step: dict[str, Any]) -> str:
    return "\n".join(str(a) for a in step.get("args", []))


def test_checks_validate_the_definitions_folder_without_the_store(build: dict[str, Any]) -> None:
    folder = build["substitutions"]["_REPORTS_DIR"]
    assert (ROOT / folder).is_dir(), f"{folder}/ (the definitions folder) is missing"
    checks = {s["id"]: s for s in build["steps"]}["checks"]
    assert '.venv/bin/herald apply --check --offline "${_REPORTS_DIR}"' in _script(checks)


def test_definitions_are_applied_by_the_new_image_after_every_deploy(build: dict[str, Any], module: HclDir) -> None:
    steps = build["steps"]
    ids = [s["id"] for s in steps]
    apply = steps[ids.index("apply-definitions")]
    deploys = [s["id"] for s in steps if s.get("args", [])[:1] == ["run"]]
    assert set(apply["waitFor"]) == set(deploys) and ids.index("apply-definitions") > max(map(ids.index, deploys))
    assert apply["name"] == build["images"][0]  # the code that just went live parses its own definitions
    assert 'herald apply "${_REPORTS_DIR}"' in _script(apply) and "--check" not in _script(apply)
    env = dict(item.split("=", 1) for item in apply["env"])
    assert env["HERALD_BACKEND"] == "gcp" and env["HERALD_GCP_PROJECT"] == "$PROJECT_ID"
    assert "$BUILD_ID" in env["HERALD_APPLY_ACTOR"]  # the change history names the build
    # Only the store is needed: none of the settings the services need is given to it.
    assert not {"HERALD_SECRET_KEY", "HERALD_TASKS_WORKER_URL", "HERALD_GCS_BUCKET"} & set(env)
    # The step runs as the deployer, which may write Firestore.
    deployer_roles = first(module.resources("google_project_iam_member")["deployer"]["for_each"])
    assert "roles/datastore.user" in deployer_roles


def test_the_definitions_in_the_folder_validate(tmp_path: Any) -> None:
    """What the checks step runs, here: a broken definition fails `make test` too."""
    from click.testing import CliRunner

    from herald.cli import main

    folder = ROOT / yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())["substitutions"]["_REPORTS_DIR"]
    if not list(folder.glob("*.y*ml")):
        return  # no definitions yet: the step says so and applies nothing
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "apply", "--check", "--offline", str(folder)])
    assert result.exit_code == 0, result.output
