# Loud failures (ARCHITECTURE.md: "nothing fails silently"). Channels are passed in: the
# ops team owns its notification channels.

resource "google_monitoring_alert_policy" "server_errors" {
  project               = var.project_id
  display_name          = "Herald ${var.environment}: 5xx rate above ${var.alerts.error_ratio * 100}%"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "5xx share of requests per service"
    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"cloud_run_revision\"",
        "resource.labels.service_name = starts_with(\"herald-\")",
        "metric.type = \"run.googleapis.com/request_count\"",
        "metric.labels.response_code_class = \"5xx\"",
      ])
      denominator_filter = join(" AND ", [
        "resource.type = \"cloud_run_revision\"",
        "resource.labels.service_name = starts_with(\"herald-\")",
        "metric.type = \"run.googleapis.com/request_count\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.error_ratio
      duration        = "300s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.labels.service_name"]
      }
      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.labels.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Herald answers 5xx above the threshold. Tasks and Pub/Sub redeliver, so nothing is lost yet; look at the service's logs. Runbook: docs/deploy.md."
  }

  alert_strategy {
    auto_close = "3600s"
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "Herald ${var.environment}: messages dead-lettered"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Push subscription forwarded messages to its dead-letter topic"
    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"pubsub_subscription\"",
        "resource.labels.subscription_id = one_of(${join(", ", [for s in google_pubsub_subscription.main : "\"${s.name}\""])})",
        "metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.dead_letter_count
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A business event or job completion failed ${var.pubsub.max_delivery_attempts} deliveries and was parked in its *-dead-letter-hold subscription. Inspect and replay: docs/deploy.md."
  }
}

resource "google_monitoring_alert_policy" "queue_backlog" {
  project               = var.project_id
  display_name          = "Herald ${var.environment}: Cloud Tasks backlog"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Queue depth above ${var.alerts.queue_depth} for ${var.alerts.backlog_duration}"
    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"cloud_tasks_queue\"",
        "resource.labels.queue_id = \"${google_cloud_tasks_queue.main.name}\"",
        "metric.type = \"cloudtasks.googleapis.com/queue/depth\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.queue_depth
      # Depth includes retries scheduled 2 / 8 / 32 minutes ahead: only a sustained
      # backlog means the worker is not keeping up.
      duration = var.alerts.backlog_duration

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The delivery queue is not draining: check the worker's 5xx rate, max instances and the queue's rate limits."
  }
}

resource "google_monitoring_alert_policy" "watchdog_failed" {
  project               = var.project_id
  display_name          = "Herald ${var.environment}: watchdog job failing"
  combiner              = "OR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Failed watchdog executions"
    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"cloud_run_job\"",
        "resource.labels.job_name = \"${google_cloud_run_v2_job.main.name}\"",
        "metric.type = \"run.googleapis.com/job/completed_execution_count\"",
        "metric.labels.result = \"failed\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "900s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The watchdog itself is failing, so missed reports would go unnoticed. Check the job's executions and logs."
  }
}

# The on-time record as a metric (issue 12): one "run on-time record" log line per finished
# scheduled run (services/on_time.py), counted by report and on_time (true/false). Its
# ratio over 7 or 30 days is the share of slots that completed within their grace.
resource "google_logging_metric" "runs_on_time" {
  project = var.project_id
  name    = "herald/runs_on_time"
  filter = join(" AND ", [
    "resource.type = \"cloud_run_revision\"",
    "resource.labels.service_name = starts_with(\"herald-\")",
    "jsonPayload.message = \"run on-time record\"",
  ])
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "report_id"
      value_type  = "STRING"
      description = "The report whose scheduled run finished"
    }
    labels {
      key         = "on_time"
      value_type  = "STRING"
      description = "true when the run succeeded within its watchdog grace"
    }
  }
  label_extractors = {
    "report_id" = "EXTRACT(jsonPayload.report_id)"
    "on_time"   = "EXTRACT(jsonPayload.on_time)"
  }
}
