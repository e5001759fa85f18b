# The watchdog: same image, run every 5 minutes by Cloud Scheduler (scheduler.tf).
resource "google_cloud_run_v2_job" "main" {
  project             = var.project_id
  name                = local.names.watchdog_job
  location            = var.region
  labels              = merge(local.labels, { role = "watchdog" })
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.runtime["watchdog"].email
      timeout         = var.watchdog.timeout
      # A failed pass is retried by the next schedule 5 minutes later; one retry covers a
      # transient start-up failure without stacking passes.
      max_retries = 1

      containers {
        image   = var.image
        command = ["herald"]
        args    = ["watchdog"]

        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }

        dynamic "env" {
          for_each = local.env["watchdog"]
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = local.secret_env["watchdog"]
          content {
            name = env.key
            value_source {
              secret_key_ref {
                secret  = google_secret_manager_secret.main[env.value].secret_id
                version = "latest"
              }
            }
          }
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [template[0].template[0].containers[0].image, client, client_version]
  }

  depends_on = [
    google_project_service.main,
    google_secret_manager_secret_iam_member.main,
  ]
}

# roles/run.invoker carries run.jobs.run: Cloud Scheduler may start executions, nothing more.
resource "google_cloud_run_v2_job_iam_member" "scheduler" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.main.name
  role     = "roles/run.invoker"
  member   = google_service_account.invoker["scheduler"].member
}
