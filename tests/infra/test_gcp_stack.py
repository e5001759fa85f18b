"""`make run-gcp` (tools/gcp_stack.py) builds what Terraform declares, under its names and
with each role's environment, so the local stack cannot quietly drift from production."""

from __future__ import annotations

from typing import Any

from tools import gcp_stack

from tests.infra.conftest import HclDir, first

# Terraform variables a local run leaves at the code's default (the same value).
LEFT_AT_DEFAULT = {"HERALD_LINK_TTL_SECONDS"}  # var.reports.link_ttl_days = 7 = Settings' default
# The local Cloud Tasks emulator is one queue (it dispatches one task at a time per queue):
# make run-gcp keeps sends and notifications on it, as an empty setting means.
LEFT_AT_DEFAULT |= {"HERALD_TASKS_SEND_QUEUE", "HERALD_TASKS_SEND_SHARDS", "HERALD_TASKS_NOTIFY_QUEUE"}
# The worker's invokers: Terraform may list all three for every family; locally each family
# accepts exactly its own caller, which is stricter and passes the same calls.
PER_FAMILY = {"HERALD_OIDC_ALLOWED_EMAILS"}


def locals_(module: HclDir) -> dict[str, Any]:
    return {k: first(v) for k, v in module.locals().items()}


def test_names_are_terraforms(module: HclDir) -> None:
    names = locals_(module)["names"]
    assert names["tasks_queue"] == gcp_stack.TASKS_QUEUE
    assert names["tick_job"] == gcp_stack.TICK_JOB
    assert first(names["herald_topics"]) == gcp_stack.HERALD_TOPICS
    assert first(names["inbound_topics"]) == gcp_stack.INBOUND_TOPICS
    pushes = locals_(module)["push_subscriptions"]
    assert {k: first(v)["path"] for k, v in pushes.items()} == gcp_stack.PUSH_PATHS
    subscription = module.resources("google_pubsub_subscription")["main"]
    assert first(subscription["name"]) == "${local.names.inbound_topics[each.value.topic]}-push"  # "<topic>-push"
    bucket = module.resources("google_storage_bucket")["main"]
    assert first(bucket["name"]) == "${var.project_id}-herald-reports"
    assert gcp_stack.bucket_name("p") == "p-herald-reports"
    invoker = module.resources("google_service_account")["invoker"]
    assert first(invoker["account_id"]) == "herald-${each.key}-invoker"
    assert set(gcp_stack.invoker_emails("p")) == set(locals_(module)["invokers"])
    assert tuple(sorted(first(locals_(module)["roles"]).removeprefix("${toset(").strip(")}[]").split(", "))) == tuple(
        sorted(f"'{r}'" for r in gcp_stack.ROLES)
    )


def test_each_role_gets_at_least_terraforms_environment(module: HclDir, tmp_path: Any) -> None:
    common = locals_(module)["env_common"]
    by_role = locals_(module)["env_role"]
    emulators = gcp_stack.Emulators("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "http://127.0.0.1:4")

    class FakeIssuer:
        oidc_certs_url = "http://127.0.0.1:5/oauth2/v1/certs"
        iap_certs_url = "http://127.0.0.1:5/iap/verify/public_key"

    for role in (*gcp_stack.ROLES, "watchdog"):
        local = gcp_stack.role_env(
            role,
            project="p",
            location="europe-west1",
            emulators=emulators,
            issuer=FakeIssuer(),  # type: ignore[arg-type]
            worker_url="http://127.0.0.1:6",
            public_url="http://127.0.0.1:7",
            admin_audience="/projects/0/locations/europe-west1/services/herald-admin",
            data_dir=tmp_path,
            secret_key="k",
            topics=gcp_stack.HERALD_TOPICS,
            bucket="p-herald-reports",
            signing_key_file=None,
        )
        wanted = set(common) | set(first(by_role[role]) or {})
        missing = wanted - set(local) - LEFT_AT_DEFAULT - PER_FAMILY
        assert not missing, f"{role}: Terraform sets {sorted(missing)}, make run-gcp does not"
        assert local["HERALD_BACKEND"] == "gcp" and local["HERALD_TASKS_QUEUE"] == gcp_stack.TASKS_QUEUE
        if role in gcp_stack.ROLES:
            assert local["HERALD_ROLE"] == first(by_role[role])["HERALD_ROLE"] == role
        else:
            assert "HERALD_ROLE" not in local  # the job keeps the default, as in Terraform
        if role == "worker":
            assert {local[f"HERALD_OIDC_{f.upper()}_EMAILS"] for f in ("tasks", "pubsub", "scheduler")} == set(
                gcp_stack.invoker_emails("p").values()
            )
