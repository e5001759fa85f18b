# The contract with service/herald/settings.py (pydantic-settings, prefix HERALD_):
# which environment variables and secrets each workload gets. tests/infra/test_drift.py
# reads Settings.model_fields and checks that every HERALD_ name here is a real field and
# that each workload gets what the gcp backend needs for its role.
locals {
  env_common = {
    HERALD_BACKEND          = "gcp"
    HERALD_GCP_PROJECT      = var.project_id
    HERALD_GCP_LOCATION     = var.region
    HERALD_BASE_URL         = local.public_url
    HERALD_LINK_TTL_SECONDS = tostring(var.reports.link_ttl_days * 86400)
    HERALD_GCS_BUCKET       = google_storage_bucket.main.name
    HERALD_TASKS_QUEUE      = local.names.tasks_queue
    HERALD_WORKER_URL       = local.worker_url
    # Cloud Tasks mints OIDC tokens as this account; the worker accepts only it.
    HERALD_TASKS_SERVICE_ACCOUNT = google_service_account.invoker["tasks"].email
    HERALD_EVENTS_TOPIC          = local.names.topics.herald_events
  }

  env = {
    worker = merge(local.env_common, {
      HERALD_ROLE                      = "worker"
      HERALD_PUBSUB_SERVICE_ACCOUNT    = google_service_account.invoker["pubsub"].email
      HERALD_SCHEDULER_SERVICE_ACCOUNT = google_service_account.invoker["scheduler"].email
      HERALD_TICK_JOB                  = local.names.tick_job
      HERALD_SIGNING_SERVICE_ACCOUNT   = google_service_account.runtime["worker"].email
    })
    ingress = merge(local.env_common, {
      HERALD_ROLE                    = "ingress"
      HERALD_SIGNING_SERVICE_ACCOUNT = google_service_account.runtime["ingress"].email
    })
    admin = merge(local.env_common, {
      HERALD_ROLE                    = "admin"
      HERALD_SIGNING_SERVICE_ACCOUNT = google_service_account.runtime["admin"].email
    })
    watchdog = merge(local.env_common, {
      HERALD_ROLE              = "worker"
      HERALD_TICK_JOB          = local.names.tick_job
      HERALD_OPS_SLACK_CHANNEL = var.ops_slack_channel
    })
  }

  # Secret Manager secrets (containers only: values are added out of band, see
  # docs/deploy.md) and the workloads that may read each one. Nothing else can.
  secrets = {
    "herald-sendgrid-api-key" = {
      env       = "HERALD_SENDGRID_API_KEY"
      workloads = ["worker"]
      purpose   = "SendGrid v3 API key (mail send)"
    }
    "herald-sendgrid-webhook-public-key" = {
      env       = "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY"
      workloads = ["ingress"]
      purpose   = "SendGrid Event Webhook ECDSA verification key"
    }
    "herald-slack-bot-token" = {
      env       = "HERALD_SLACK_BOT_TOKEN"
      workloads = ["worker", "watchdog"]
      purpose   = "Slack bot token for report delivery and ops alerts"
    }
    "herald-event-secrets" = {
      env       = "HERALD_EVENT_SECRETS"
      workloads = ["ingress"]
      purpose   = "JSON object of per-source HMAC secrets for /webhooks/events/<source>"
    }
    "herald-api-token" = {
      env       = "HERALD_API_TOKEN"
      workloads = ["admin"]
      purpose   = "Bearer token for /api callers that do not come through IAP"
    }
    "herald-secret-key" = {
      env       = "HERALD_SECRET_KEY"
      workloads = ["worker", "ingress", "admin", "watchdog"]
      purpose   = "HMAC key shared by every instance (links and internal signatures)"
    }
  }

  # workload => { ENV_NAME => secret id }
  secret_env = {
    for w in local.workloads : w => {
      for id, s in local.secrets : s.env => id if contains(s.workloads, w)
    }
  }
}
