# One queue for run steps and per-recipient sends. Tasks are HTTP tasks with OIDC to the
# worker, created by the application. The 2 / 8 / 32-minute retry schedule is the
# application's (it enqueues attempt N+1 with a schedule_time and answers 2xx); this
# retry_config only catches crashes and timeouts, and is bounded so a broken handler
# cannot retry forever.
resource "google_cloud_tasks_queue" "main" {
  project  = var.project_id
  name     = local.names.tasks_queue
  location = var.region

  rate_limits {
    max_dispatches_per_second = var.tasks_queue.max_dispatches_per_second
    max_concurrent_dispatches = var.tasks_queue.max_concurrent_dispatches
  }

  # Fixed, not a variable: a crash safety net, not a tuning knob. A handler that crashed
  # or timed out is retried a few times over about an hour, then the task is dropped and
  # the run's lease expiry and the watchdog take over (CKV2_HERALD_2 checks the bound).
  retry_config {
    max_attempts       = 5
    min_backoff        = "10s"
    max_backoff        = "600s"
    max_doublings      = 4
    max_retry_duration = "3600s"
  }

  stackdriver_logging_config {
    sampling_ratio = 0.1
  }

  depends_on = [google_project_service.main]
}

resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = { for w, a in local.runtime_access : w => a if a.enqueue }

  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.main.name
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.runtime[each.key].member
}
