# The contract with service/herald/settings.py (pydantic-settings, prefix HERALD_):
# which environment variables and secrets each workload gets. tests/infra/test_drift.py
# reads Settings.model_fields at test time and checks that every HERALD_ name here is a
# real field, that every field the gcp backend needs reaches the workloads that need it,
# and that names taken from local.names equal the code's defaults.
locals {
  env_common = {
    HERALD_BACKEND          = "gcp"
    HERALD_GCP_PROJECT      = var.project_id
    HERALD_GCP_LOCATION     = var.region
    HERALD_BASE_URL         = local.public_url
    HERALD_LINK_TTL_SECONDS = tostring(var.reports.link_ttl_days * 86400)
    HERALD_GCS_BUCKET       = google_storage_bucket.main.name
    HERALD_TASKS_QUEUE      = local.names.tasks_queue
    # Sends and notifications on queues of their own (tasks.tf), so a large fan-out never
    # delays another report's run steps; sends spread over send_shards queues.
    HERALD_TASKS_SEND_QUEUE   = local.send_queue_base
    HERALD_TASKS_SEND_SHARDS  = tostring(var.task_queues.send_shards)
    HERALD_TASKS_NOTIFY_QUEUE = local.notify_queue
    HERALD_TASKS_WORKER_URL   = local.worker_url
    HERALD_PUBSUB_TOPICS      = jsonencode(local.names.herald_topics)
    HERALD_SCHEDULER_TICK_JOB = local.names.tick_job
    # Cloud Tasks mints each task's OIDC token as this account (the creator needs actAs).
    HERALD_TASKS_SERVICE_ACCOUNT = google_service_account.invoker["tasks"].email
  }

  # Per-workload additions, merged over env_common.
  env_role = {
    worker = {
      HERALD_ROLE = "worker"
      # Internal routes accept Google OIDC tokens for the worker URL, each route family
      # from its own caller only (ARCHITECTURE.md decision 6, issue 11): a Cloud Scheduler
      # token is refused on /tasks/*, a Pub/Sub token on /scheduler/*.
      HERALD_OIDC_AUDIENCE         = local.worker_url
      HERALD_OIDC_TASKS_EMAILS     = google_service_account.invoker["tasks"].email
      HERALD_OIDC_PUBSUB_EMAILS    = google_service_account.invoker["pubsub"].email
      HERALD_OIDC_SCHEDULER_EMAILS = google_service_account.invoker["scheduler"].email
    }
    ingress = {
      HERALD_ROLE = "ingress"
    }
    admin = {
      HERALD_ROLE = "admin"
      # IAP signs each request's x-goog-iap-jwt-assertion for this audience (IAP directly
      # on Cloud Run); the name is spelled out because the service cannot refer to itself.
      HERALD_IAP_AUDIENCE = "/projects/${data.google_project.main.number}/locations/${var.region}/services/herald-admin"
    }
    # The job serves no routes, so it keeps the default role.
    watchdog = {}
  }

  env = { for w in local.workloads : w => merge(local.env_common, local.env_role[w]) }

  # Secret Manager secrets (containers only: values are added out of band, see
  # docs/deploy.md) and the workloads that may read each one; nothing else can. `env`
  # is the variable the secret is mounted as; null = the container exists for a setting
  # the code does not read yet (the drift test lists these).
  secrets = {
    "herald-sendgrid-api-key" = {
      env       = "HERALD_SENDGRID_API_KEY"
      workloads = ["worker"]
      purpose   = "sendgrid-v3-api-key-mail-send"
    }
    "herald-sendgrid-webhook-public-key" = {
      env       = "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY"
      workloads = ["ingress"]
      purpose   = "sendgrid-event-webhook-ecdsa-public-key"
    }
    "herald-slack-bot-token" = {
      env       = "HERALD_SLACK_BOT_TOKEN"
      workloads = ["worker", "watchdog"]
      purpose   = "slack-bot-token-delivery-and-ops-alerts"
    }
    "herald-event-secrets" = {
      env       = "HERALD_EVENT_SECRETS"
      workloads = ["ingress"]
      purpose   = "per-source-hmac-secrets-for-business-event-webhooks"
    }
    "herald-api-token" = {
      env       = "HERALD_API_TOKEN"
      workloads = ["admin"]
      purpose   = "bearer-token-for-api-callers-outside-iap"
    }
    "herald-secret-key" = {
      env       = "HERALD_SECRET_KEY"
      workloads = ["worker", "ingress", "admin", "watchdog"]
      purpose   = "hmac-key-shared-by-every-instance"
    }
  }

  # workload => { ENV_NAME => secret id }
  secret_env = {
    for w in local.workloads : w => {
      for id, s in local.secrets : s.env => id if s.env != null && contains(s.workloads, w)
    }
  }
}
