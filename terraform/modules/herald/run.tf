# One image, three Cloud Run services chosen by HERALD_ROLE.
locals {
  service_config = {
    worker = merge(var.services.worker, {
      # Only Google's push sources (Cloud Tasks, Pub/Sub, Scheduler in this project) reach it,
      # and they must still present an OIDC token that Cloud Run IAM accepts.
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      iap_enabled = false
    })
    ingress = merge(var.services.ingress, {
      # Public by design: SendGrid, business-event webhooks and recipients' links. Every
      # route authenticates in the app (ECDSA / HMAC signatures, link capabilities).
      ingress     = "INGRESS_TRAFFIC_ALL"
      iap_enabled = false
    })
    admin = merge(var.services.admin, {
      ingress     = "INGRESS_TRAFFIC_ALL"
      iap_enabled = true
    })
  }
}

resource "google_cloud_run_v2_service" "main" {
  for_each = local.roles

  project             = var.project_id
  name                = "herald-${each.key}"
  location            = var.region
  description         = "Herald ${each.key} (${var.environment})"
  labels              = merge(local.labels, { role = each.key })
  ingress             = local.service_config[each.key].ingress
  iap_enabled         = local.service_config[each.key].iap_enabled
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.runtime[each.key].email
    max_instance_request_concurrency = local.service_config[each.key].concurrency
    timeout                          = local.service_config[each.key].timeout
    labels                           = merge(local.labels, { role = each.key })

    scaling {
      min_instance_count = local.service_config[each.key].min_instances
      max_instance_count = local.service_config[each.key].max_instances
    }

    containers {
      image = var.image
      # The Dockerfile's CMD: gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = local.service_config[each.key].cpu
          memory = local.service_config[each.key].memory
        }
        # Request-based billing: no background threads on the gcp backend.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.env[each.key]
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.secret_env[each.key]
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

      # TCP startup probe: /healthz is served by the ingress role only.
      startup_probe {
        tcp_socket {
          port = 8080
        }
        period_seconds    = 5
        failure_threshold = 12
      }
    }
  }

  lifecycle {
    # Cloud Build rolls the image (cloudbuild.yaml); Terraform owns everything else.
    ignore_changes = [template[0].containers[0].image, client, client_version]
  }

  depends_on = [
    google_project_service.main,
    google_secret_manager_secret_iam_member.main,
  ]
}

# Who may invoke which service. Worker: exactly the three push callers. Admin: only IAP's
# service agent, after IAP has checked the user. Ingress: anyone (public_invoker below).
locals {
  service_invokers = merge(
    {
      for k, sa in google_service_account.invoker :
      "worker/${k}" => { role = "worker", member = sa.member }
    },
    {
      "admin/iap" = { role = "admin", member = "serviceAccount:${google_project_service_identity.main["iap.googleapis.com"].email}" }
    },
  )
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = local.service_invokers

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.main[each.value.role].name
  role     = "roles/run.invoker"
  member   = each.value.member
}

# The one public service, kept as its own resource so policy CKV2_HERALD_3 can check
# that allUsers is granted on the ingress service and nowhere else.
resource "google_cloud_run_v2_service_iam_member" "public_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.main["ingress"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_iap_web_cloud_run_service_iam_member" "admin" {
  for_each = var.iap_members

  # IAP's web-resource IAM wants the project number (provider issue 23092).
  project                = data.google_project.main.number
  location               = var.region
  cloud_run_service_name = google_cloud_run_v2_service.main["admin"].name
  role                   = "roles/iap.httpsResourceAccessor"
  member                 = each.value
}
