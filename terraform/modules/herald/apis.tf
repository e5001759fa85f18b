locals {
  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # signBlob for GCS V4 signed URLs on Cloud Run
    "iap.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "main" {
  for_each = local.apis

  project = var.project_id
  service = each.value
  # Turning an API off on destroy would break anything else in the project using it.
  disable_on_destroy = false
}

# Service agents that need IAM grants below; creating them explicitly makes the grants
# orderable (they otherwise appear lazily on first use).
resource "google_project_service_identity" "main" {
  provider = google-beta
  for_each = toset(["pubsub.googleapis.com", "iap.googleapis.com"])

  project = var.project_id
  service = each.value

  depends_on = [google_project_service.main]
}
