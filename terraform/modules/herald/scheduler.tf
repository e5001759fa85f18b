# The one-minute tick (ARCHITECTURE.md decision 1). Cloud Scheduler adds the
# X-CloudScheduler-ScheduleTime header the handler uses as "now".
resource "google_cloud_scheduler_job" "main" {
  project          = var.project_id
  region           = var.region
  name             = local.names.tick_job
  description      = "Herald tick: start due runs (idempotent; a missed tick is caught up by the next)."
  schedule         = "* * * * *"
  time_zone        = "Etc/UTC"
  attempt_deadline = "120s"

  # No retries: the next tick a minute later does the same work.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "${local.worker_url}/scheduler/tick"
    body        = base64encode("{}")
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.invoker["scheduler"].email
      audience              = local.worker_url
    }
  }

  depends_on = [google_project_service.main]
}

# The watchdog job, started through the Cloud Run Admin API (jobs:run) with an OAuth
# token: Google APIs take OAuth access tokens, Cloud Run services take OIDC.
#
# Created paused while the services run Google's sample image (first deploy,
# docs/deploy.md): that image has no `herald` command, so every execution would fail
# and raise the watchdog-failed alert. Cloud Build resumes it once the job runs Herald's
# image (cloudbuild.yaml step resume-watchdog); Terraform then leaves `paused` alone.
resource "google_cloud_scheduler_job" "watchdog" {
  project          = var.project_id
  region           = var.region
  name             = local.names.watchdog_scheduler
  description      = "Run the Herald watchdog job (missed heartbeats, stuck runs, dead tick)."
  schedule         = var.watchdog.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"
  paused           = local.sample_image

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/${google_cloud_run_v2_job.main.id}:run"

    oauth_token {
      service_account_email = google_service_account.invoker["scheduler"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  lifecycle {
    # Cloud Build resumes it after the first real image; a later apply must not pause it.
    ignore_changes = [paused]
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler]
}
