# Secret containers only. Values are added with `gcloud secrets versions add` (see
# docs/deploy.md) so they never pass through Terraform plans or state.
resource "google_secret_manager_secret" "main" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = each.key
  labels    = local.labels
  annotations = {
    purpose = each.value.purpose
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.main]
}

# Each runtime reads only the secrets its workload uses.
resource "google_secret_manager_secret_iam_member" "main" {
  for_each = merge([
    for id, s in local.secrets : {
      for w in s.workloads : "${id}/${w}" => { secret = id, workload = w }
    }
  ]...)

  project   = var.project_id
  secret_id = google_secret_manager_secret.main[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.value.workload].member
}
