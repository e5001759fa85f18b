resource "google_storage_bucket" "main" {
  # checkov:skip=CKV_GCP_62:Downloads are tracked by Herald itself (each /l/ link use is logged before the short-lived signed URL is issued); legacy usage-log buckets add nothing, and Data Access audit logs can be enabled per project if wanted.
  # checkov:skip=CKV_GCP_78:Objects are written once under unique names and never overwritten; soft delete (7 days) covers accidental deletion, and versioning would keep deleted reports past their retention.
  project  = var.project_id
  name     = "${var.project_id}-herald-reports"
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Rendered reports are kept past the longest link lifetime, so an expired link can be
  # re-issued for a while; then they go (variables.tf checks retention > link lifetime).
  lifecycle_rule {
    condition {
      age = var.reports.retention_days
    }
    action {
      type = "Delete"
    }
  }

  soft_delete_policy {
    retention_duration_seconds = 7 * 24 * 3600
  }

  depends_on = [google_project_service.main]
}

resource "google_storage_bucket_iam_member" "runtime" {
  for_each = { for w, a in local.runtime_access : w => a if a.bucket_role != null }

  bucket = google_storage_bucket.main.name
  role   = each.value.bucket_role
  member = google_service_account.runtime[each.key].member
}

resource "google_artifact_registry_repository" "main" {
  # checkov:skip=CKV_GCP_84:Google-managed encryption is the accepted baseline for Herald; CMEK would add a KMS key and its IAM per environment for no requirement we have (images hold code, no data).
  project       = var.project_id
  location      = var.region
  repository_id = "herald"
  format        = "DOCKER"
  description   = "Herald images, tagged with the commit SHA by Cloud Build."
  labels        = local.labels

  # Cleanup: DELETE policies remove, KEEP policies protect, and KEEP wins where both
  # match (https://cloud.google.com/artifact-registry/docs/repositories/cleanup-policy).
  # So: the 30 most recent images always stay (rollback, docs/deploy.md); beyond them,
  # untagged layers go after 7 days and any image after 90.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 30
    }
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${7 * 86400}s"
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${90 * 86400}s"
    }
  }

  depends_on = [google_project_service.main]
}

resource "google_artifact_registry_repository_iam_member" "deployer" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.main.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deployer.member
}
