# The queue of run steps (and of sends and notifications unless the worker is given the
# queues below). Tasks are HTTP tasks with OIDC to the worker, created by the application. The 2 / 8 / 32-minute retry schedule is the
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

# Issue 14: sends and Herald's own notifications on queues of their own, so a large fan-out
# never waits in front of another report's run steps (which stay on `main`), and sends
# spread over `task_queues.send_shards` queues: one queue dispatches at most 500/s
# (docs/scaling.md has the arithmetic against SendGrid's limits). The worker reads the
# names from HERALD_TASKS_SEND_QUEUE / HERALD_TASKS_SEND_SHARDS / HERALD_TASKS_NOTIFY_QUEUE
# (service/herald/adapters/gcp/cloud_tasks_queue.py routes by task path; a send's shard is
# a stable hash of its task name, so Cloud Tasks' per-queue de-duplication still holds).
variable "task_queues" {
  description = "Queues of their own for sends (sharded) and notifications, with their dispatch limits."
  type = object({
    send_shards                      = optional(number, 1)
    send_max_dispatches_per_second   = optional(number, 500)
    send_max_concurrent_dispatches   = optional(number, 1000)
    notify_max_dispatches_per_second = optional(number, 20)
    notify_max_concurrent_dispatches = optional(number, 50)
  })
  default = {}

  validation {
    condition     = var.task_queues.send_shards >= 1 && var.task_queues.send_shards <= 256
    error_message = "send_shards must be in [1, 256] (HERALD_TASKS_SEND_SHARDS has the same bounds)."
  }

  validation {
    condition = (
      var.task_queues.send_max_dispatches_per_second > 0 && var.task_queues.send_max_dispatches_per_second <= 500 &&
      var.task_queues.notify_max_dispatches_per_second > 0 && var.task_queues.notify_max_dispatches_per_second <= 500
    )
    error_message = "max_dispatches_per_second must be in (0, 500] (a Cloud Tasks queue's limit)."
  }
}

locals {
  send_queue_base = "herald-sends"
  notify_queue    = "herald-notifications"
  # One queue keeps its plain name; N shards are herald-sends-0 .. herald-sends-N-1 (send_queue_ids()).
  send_queue_names = var.task_queues.send_shards == 1 ? [local.send_queue_base] : [
    for i in range(var.task_queues.send_shards) : "${local.send_queue_base}-${i}"
  ]
  extra_task_queues = merge(
    { for name in local.send_queue_names : name => {
      rate        = var.task_queues.send_max_dispatches_per_second
      concurrency = var.task_queues.send_max_concurrent_dispatches
    } },
    { (local.notify_queue) = {
      rate        = var.task_queues.notify_max_dispatches_per_second
      concurrency = var.task_queues.notify_max_concurrent_dispatches
    } },
  )
}

resource "google_cloud_tasks_queue" "extra" {
  for_each = local.extra_task_queues

  project  = var.project_id
  name     = each.key
  location = var.region

  rate_limits {
    max_dispatches_per_second = each.value.rate
    max_concurrent_dispatches = each.value.concurrency
  }

  # The same crash safety net as `main` (CKV2_HERALD_2 checks the bound).
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

resource "google_cloud_tasks_queue_iam_member" "extra_enqueuer" {
  for_each = {
    for pair in setproduct(keys(local.extra_task_queues), [for w, a in local.runtime_access : w if a.enqueue]) :
    "${pair[0]}/${pair[1]}" => { queue = pair[0], workload = pair[1] }
  }

  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.extra[each.value.queue].name
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.runtime[each.value.workload].member
}
