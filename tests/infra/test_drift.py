"""Drift between the code and the Terraform that deploys it.

Reads `Settings.model_fields` at test time, so a setting added, renamed or removed in
service/herald/settings.py shows up here until terraform/modules/herald/env.tf follows.
Also: names the code has as defaults (queue, topics, tick job) equal the resources'
names, Firestore indexes come from the code's own declaration file, and every route the
Terraform points at exists in the app."""

from __future__ import annotations

import json
import os
import re
import tempfile
import typing
from typing import Any

import pytest

from herald.settings import Settings
from tests.infra.conftest import MODULE, ROOT, HclDir, first

SERVICES = ("worker", "ingress", "admin")
WORKLOADS = (*SERVICES, "watchdog")
ALL = set(WORKLOADS)
ENQUEUERS = {"worker", "ingress", "admin"}  # routes that start runs or deliveries create Cloud Tasks

# Which workloads the gcp backend needs each setting in (by route set: worker = /tasks,
# /scheduler, /pubsub; ingress = /webhooks, /l, /healthz; admin = /admin, /api; the
# watchdog job). Terraform may give a setting to more workloads, never fewer.
NEEDS: dict[str, set[str]] = {
    "backend": ALL,
    "gcp_project": ALL,
    "gcp_location": ALL,
    "base_url": ALL,  # links in mail, admin pages and alerts
    "secret_key": ALL,  # one HMAC key shared by every instance
    "role": set(SERVICES),
    "gcs_bucket": {"worker", "ingress", "admin"},
    "link_ttl_seconds": {"worker", "ingress", "admin"},
    "tasks_queue": ENQUEUERS,
    "tasks_worker_url": ENQUEUERS,
    "tasks_service_account": ENQUEUERS,
    "oidc_audience": {"worker"},
    # one invoker per internal route family (issue 11): never one list for all three
    "oidc_tasks_emails": {"worker"},
    "oidc_pubsub_emails": {"worker"},
    "oidc_scheduler_emails": {"worker"},
    "pubsub_topics": {"worker", "admin"},
    "scheduler_tick_job": {"worker", "watchdog"},
    "sendgrid_api_key": {"worker"},
    "slack_bot_token": {"worker", "watchdog"},
    "api_token": {"admin"},
    "iap_audience": {"admin"},
}

# Settings whose empty default is right in production, and why.
OPTIONAL_IN_GCP: dict[str, str] = {
    "reply_to": "no Reply-To unless an operator sets one",
    "sendgrid_asm_group_id": "unset = List-Unsubscribe headers to Herald's own endpoint",
    "tasks_oidc_audience": "empty = tasks_worker_url, the audience the worker verifies",
    "tasks_emulator_host": "emulators are for tests and local runs",
    # Issue 14: tasks.tf creates herald-sends(-N) and herald-notifications; until env.tf and
    # make run-gcp's emulator carry them, empty = every task on tasks_queue (as before).
    "tasks_send_queue": "empty = tasks_queue (one queue for all tasks, as before)",
    "tasks_notify_queue": "empty = tasks_queue (one queue for all tasks, as before)",
    "pubsub_emulator_host": "emulators are for tests and local runs",
    "storage_emulator_host": "emulators are for tests and local runs",
    "firestore_emulator_host": "emulators are for tests and local runs",
    "allowed_hosts": "the Host allow-list applies to a loopback-bound herald serve only; Cloud Run routes by host",
    "source_root": "unset = file sources read only under the definitions' folder",
    "oidc_allowed_emails": "the fallback for a family without its own list; env.tf sets all three, so none falls back",
    "gcs_signing_key_file": "Cloud Run has no key file: URLs are signed through IAM signBlob",
    "gcs_signer_email": "empty = the runtime's own account, which may sign as itself (iam.tf)",
    "watchdog_heartbeat_url": "no dead-man monitor for the watchdog unless an operator sets one",
    "admin_token": "the gcp admin service is behind IAP; the token login is the embedded backend's",
    "owner_slack_channel": "owner alerts go by e-mail unless an operator adds a Slack channel",
    "ops_email": "ops alerts go to Slack unless an operator adds an address",
}

SECRET_NAME = re.compile(r"(^|_)(api_key|token|secret|secrets|password|private_key|public_key|secret_key)$")


def norm(value: Any) -> str:
    """An expression as text, independent of hcl2's quoting and spacing."""
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"\s+", "", text).replace('\\"', '"').replace("'", '"')


def _empty_default(name: str) -> bool:
    field = Settings.model_fields[name]
    return field.is_required() or field.default in ("", None, (), [], {})


@pytest.fixture(scope="module")
def contract(module: HclDir) -> dict[str, Any]:
    loc = module.locals()
    common = first(loc["env_common"])
    per_role = first(loc["env_role"])
    secrets = first(loc["secrets"])
    plain = {w: {**common, **(first(per_role[w]) or {})} for w in WORKLOADS}
    secret_env = {
        w: {s["env"]: sid for sid, s in secrets.items() if s["env"] and w in s["workloads"]} for w in WORKLOADS
    }
    return {"plain": plain, "secret": secret_env, "secrets": secrets, "names": first(loc["names"]), "locals": loc}


def _field(env_name: str) -> str:
    assert env_name.startswith("HERALD_"), env_name
    return env_name.removeprefix("HERALD_").lower()


def _provided(contract: dict[str, Any]) -> dict[str, set[str]]:
    got: dict[str, set[str]] = {}
    for w in WORKLOADS:
        for env_name in [*contract["plain"][w], *contract["secret"][w]]:
            got.setdefault(_field(env_name), set()).add(w)
    return got


def test_the_contract_is_what_the_workloads_get(module: HclDir, contract: dict[str, Any]) -> None:
    loc = contract["locals"]
    assert norm(first(loc["workloads"])) == norm('${toset(["worker", "ingress", "admin", "watchdog"])}')
    env_expr = "${{for w in local.workloads : w => merge(local.env_common,local.env_role[w])}}"
    assert norm(first(loc["env"])) == norm(env_expr)
    run = norm(module.files["run.tf"])
    job = norm(module.files["jobs.tf"])
    assert "${local.env[each.key]}" in run and "${local.secret_env[each.key]}" in run
    assert '${local.env["watchdog"]}' in job and '${local.secret_env["watchdog"]}' in job


def test_every_terraform_variable_is_a_setting(contract: dict[str, Any]) -> None:
    unknown = sorted(
        f"{env_name} ({w})"
        for w in WORKLOADS
        for env_name in [*contract["plain"][w], *contract["secret"][w]]
        if _field(env_name) not in Settings.model_fields
    )
    assert unknown == [], "Terraform sets variables no Settings field reads (renamed or removed?)"


def test_every_setting_the_gcp_backend_needs_reaches_the_workloads_that_need_it(contract: dict[str, Any]) -> None:
    provided = _provided(contract)
    problems = []
    for name in Settings.model_fields:
        needed_by = NEEDS.get(name)
        if needed_by is not None:
            missing = needed_by - provided.get(name, set())
            if missing:
                problems.append(f"{name}: needed by {sorted(missing)} but not set there in env.tf")
        elif _empty_default(name) and name not in provided and name not in OPTIONAL_IN_GCP:
            problems.append(
                f"{name}: has no usable default and Terraform does not provide it. Add HERALD_{name.upper()} "
                "to terraform/modules/herald/env.tf (a secret if it is one), or list it in OPTIONAL_IN_GCP "
                "with the reason its default is right in production"
            )
    stale = sorted((set(NEEDS) | set(OPTIONAL_IN_GCP)) - set(Settings.model_fields))
    assert stale == [], f"NEEDS / OPTIONAL_IN_GCP name settings that no longer exist: {stale}"
    assert problems == [], "\n".join(problems)


def test_secrets_come_from_secret_manager_never_plain_env(contract: dict[str, Any]) -> None:
    for w in WORKLOADS:
        plain_secrets = [n for n in contract["plain"][w] if SECRET_NAME.search(_field(n))]
        assert plain_secrets == [], f"{w}: secret-shaped settings as plain env vars"
    for name in Settings.model_fields:
        if SECRET_NAME.search(name) and name in _provided(contract):
            assert any(f"HERALD_{name.upper()}" in contract["secret"][w] for w in WORKLOADS), name


def test_each_runtime_reads_exactly_the_secrets_it_mounts(module: HclDir, contract: dict[str, Any]) -> None:
    # secrets.tf grants secretAccessor per (secret, workload) from the same local.secrets map.
    iam = module.resources("google_secret_manager_secret_iam_member")["main"]
    assert "for w in s.workloads" in first(iam["for_each"])
    assert first(iam["member"]) == "${google_service_account.runtime[each.value.workload].member}"


def test_literal_values_are_what_the_settings_accept(contract: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    names = contract["names"]
    for w in WORKLOADS:
        env = {**contract["plain"][w], **{k: _secret_stand_in(k) for k in contract["secret"][w]}}
        for key in list(env):
            env[key] = _resolve(env[key], names, Settings.model_fields[_field(key)].annotation)
        for key in [k for k in os.environ if k.startswith("HERALD_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(data_dir=tempfile.mkdtemp())
        assert settings.backend == "gcp"
        assert settings.role == (w if w in SERVICES else "all")
        assert settings.oidc_audience == (settings.tasks_worker_url if w == "worker" else "")


def _secret_stand_in(env_name: str) -> str:
    """A secret's value is written out of band; stand in with one of the setting's own type."""
    base = typing.get_origin(Settings.model_fields[_field(env_name)].annotation)
    return '{"crm": "placeholder-secret"}' if base is dict else "placeholder-secret"


def _resolve(value: str, names: dict[str, Any], annotation: Any) -> str:
    if "${" not in value:
        return value
    m = re.fullmatch(r"\$\{local\.names\.(\w+)\}", value)
    if m:
        return str(names[m.group(1)])
    m = re.fullmatch(r"\$\{jsonencode\(local\.names\.(\w+)\)\}", value)
    if m:
        return json.dumps(first(names[m.group(1)]))
    # Any other expression: a well-typed stand-in (the value itself is computed by Terraform).
    base = typing.get_origin(annotation) or annotation
    if base is typing.Annotated:
        base = typing.get_origin(typing.get_args(annotation)[0]) or typing.get_args(annotation)[0]
    return {int: "60", float: "1.0", bool: "true", tuple: "a@x.iam.gserviceaccount.com", dict: "{}"}.get(
        base, "https://stand-in.example"
    )


def test_names_the_code_knows_match_the_resources(module: HclDir, contract: dict[str, Any]) -> None:
    names = contract["names"]
    plain = contract["plain"]["worker"]
    checked = []
    for env_name, value in plain.items():
        m = re.fullmatch(r"\$\{(?:jsonencode\()?local\.names\.(\w+)\)?\}", value)
        if m:
            field = _field(env_name)
            assert first(names[m.group(1)]) == Settings.model_fields[field].default, field
            checked.append(field)
    assert sorted(checked) == ["pubsub_topics", "scheduler_tick_job", "tasks_queue"]
    # ...and the resources take their names from the same locals.
    assert module.resources("google_cloud_tasks_queue")["main"]["name"] == ["${local.names.tasks_queue}"]
    assert module.resources("google_cloud_scheduler_job")["main"]["name"] == ["${local.names.tick_job}"]
    topics = module.resources("google_pubsub_topic")["main"]
    assert norm(first(topics["for_each"])) == "${merge(local.names.inbound_topics,local.names.herald_topics)}"
    assert first(topics["name"]) == "${each.value}"
    job = module.resources("google_cloud_run_v2_job")["main"]
    assert first(job["name"]) == "${local.names.watchdog_job}"


def test_oidc_callers_and_audiences_agree(module: HclDir, contract: dict[str, Any]) -> None:
    worker = contract["plain"]["worker"]
    assert worker["HERALD_OIDC_AUDIENCE"] == worker["HERALD_TASKS_WORKER_URL"] == "${local.worker_url}"
    # Each route family accepts exactly its own caller's account (issue 11): a Scheduler
    # token on /tasks/* or a Pub/Sub token on /scheduler/* is refused by the worker.
    for family in ("tasks", "pubsub", "scheduler"):
        value = worker[f"HERALD_OIDC_{family.upper()}_EMAILS"]
        assert norm(value) == norm(f'${{google_service_account.invoker["{family}"].email}}'), (family, value)
    # No catch-all list that would let one family's caller into another's routes.
    assert "HERALD_OIDC_ALLOWED_EMAILS" not in worker
    # What each caller's token is minted as matches the family it calls.
    assert worker["HERALD_TASKS_SERVICE_ACCOUNT"] == '${google_service_account.invoker["tasks"].email}'
    text = norm(module.resources("google_pubsub_subscription")["main"])
    assert '"audience":["${local.worker_url}"]' in text and 'invoker["pubsub"]' in text
    tick = norm(module.resources("google_cloud_scheduler_job")["main"])
    assert '"audience":["${local.worker_url}"]' in tick and 'invoker["scheduler"]' in tick


# --- Firestore: indexes and field overrides come from the code's own declaration -------

INDEX_FILE = ROOT / "service" / "herald" / "adapters" / "gcp" / "firestore_indexes.json"


def test_terraform_reads_the_codes_index_file(module: HclDir) -> None:
    spec = first(module.locals()["firestore_spec"])
    rel = re.fullmatch(r'\$\{jsondecode\(file\("\$\{path\.module\}/(.+)"\)\)\}', spec)
    assert rel, spec
    assert (MODULE / rel.group(1)).resolve() == INDEX_FILE.resolve()
    assert INDEX_FILE.exists()
    assert first(module.resources("google_firestore_index")["main"]["for_each"]) == "${local.firestore_indexes}"
    assert first(module.resources("google_firestore_field")["main"]["for_each"]) == "${local.firestore_fields}"


def test_index_declarations_are_ones_terraform_can_create() -> None:
    spec = json.loads(INDEX_FILE.read_text())
    keys = set()
    for idx in spec["indexes"]:
        assert set(idx) <= {"collectionGroup", "queryScope", "fields"}, idx
        assert idx.get("queryScope", "COLLECTION") in {"COLLECTION", "COLLECTION_GROUP"}
        assert len(idx["fields"]) >= 2, f"single-field indexes are automatic, not composite: {idx}"
        for f in idx["fields"]:
            assert set(f) in ({"fieldPath", "order"}, {"fieldPath", "arrayConfig"}), f
            assert f.get("order", "ASCENDING") in {"ASCENDING", "DESCENDING"}
            assert f.get("arrayConfig", "CONTAINS") == "CONTAINS"
        # Same key expression as firestore.tf: duplicates would make two resources one.
        key = "|".join(
            [idx["collectionGroup"], idx.get("queryScope", "COLLECTION")]
            + [f"{f['fieldPath']}:{f.get('order', f.get('arrayConfig'))}" for f in idx["fields"]]
        )
        assert key not in keys, f"duplicate index {key}"
        keys.add(key)
    overrides = spec.get("fieldOverrides", [])
    seen = set()
    for o in overrides:
        assert set(o) <= {"collectionGroup", "fieldPath", "ttl", "indexes"}, o
        assert (o["collectionGroup"], o["fieldPath"]) not in seen
        seen.add((o["collectionGroup"], o["fieldPath"]))
        assert isinstance(o.get("ttl", False), bool)
    ttl = {(o["collectionGroup"], o["fieldPath"]) for o in overrides if o.get("ttl")}
    assert ("inbound_events", "expire_at") in ttl, "event de-duplication documents must expire"


# --- Routes Terraform points at exist in the app ----------------------------------------

# (workload, method, path) that Terraform, the outputs and docs/deploy.md rely on.
TARGETS = [
    ("worker", "POST", "/scheduler/tick"),
    ("worker", "POST", "/pubsub/events"),
    ("worker", "POST", "/pubsub/job-status"),
    ("worker", "POST", "/tasks/deliveries/send"),
    ("ingress", "POST", "/webhooks/sendgrid"),
    ("ingress", "GET", "/l/some-token"),
    ("ingress", "GET", "/healthz"),
]


def _terraform_paths(module: HclDir) -> set[str]:
    subs = first(module.locals()["push_subscriptions"])
    paths = {first(s)["path"] for s in subs.values()}
    tick = first(module.resources("google_cloud_scheduler_job")["main"]["http_target"])
    paths.add(first(tick["uri"]).removeprefix("${local.worker_url}"))
    return paths


def test_route_targets_cover_what_terraform_points_at(module: HclDir) -> None:
    assert _terraform_paths(module) <= {path for _, _, path in TARGETS}


def test_routes_terraform_points_at_exist_for_their_role() -> None:
    from werkzeug.exceptions import MethodNotAllowed, NotFound

    from herald.web.app import create_app

    missing = []
    for role, method, path in TARGETS:
        app = create_app(settings=Settings(role=role, data_dir=tempfile.mkdtemp()))
        try:
            app.url_map.bind("herald.test").match(path, method=method)
        except (NotFound, MethodNotAllowed):
            missing.append(f"{role} {method} {path}")
    assert missing == [], "Terraform points at routes the app does not serve for that role"
