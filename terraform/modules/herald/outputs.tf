output "service_urls" {
  description = "run.app URL of each Cloud Run service by role."
  value       = { for role, s in google_cloud_run_v2_service.main : role => s.uri }
}

output "public_base_url" {
  description = "Base URL used in e-mailed links (custom domain or the ingress URL)."
  value       = local.public_url
}

output "sendgrid_event_webhook_url" {
  description = "URL to configure as SendGrid's Event Webhook (signed events on)."
  value       = "${local.public_url}/webhooks/sendgrid"
}

output "runtime_service_accounts" {
  description = "E-mail of each workload's runtime service account."
  value       = { for w, sa in google_service_account.runtime : w => sa.email }
}

output "invoker_service_accounts" {
  description = "E-mail of the service account each push caller (tasks, pubsub, scheduler) presents."
  value       = { for k, sa in google_service_account.invoker : k => sa.email }
}

output "deployer_service_account" {
  description = "Service account for Cloud Build deploys (gcloud builds submit --service-account)."
  value       = google_service_account.deployer.id
}

output "artifact_registry" {
  description = "Docker repository path for the Herald image."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.main.repository_id}"
}

output "reports_bucket" {
  description = "GCS bucket that holds rendered reports."
  value       = google_storage_bucket.main.name
}

output "tasks_queue" {
  description = "Full id of the Cloud Tasks queue."
  value       = google_cloud_tasks_queue.main.id
}

output "topics" {
  description = "Pub/Sub topic ids: business events and job completions (inbound, pushed to the worker); runs and deliveries (Herald's own events, outbound)."
  value       = { for k, t in google_pubsub_topic.main : k => t.id }
}

output "secret_ids" {
  description = "Secret Manager secrets whose versions must be added before the first deploy."
  value       = keys(google_secret_manager_secret.main)
}

output "watchdog_job" {
  description = "Name of the watchdog Cloud Run Job."
  value       = google_cloud_run_v2_job.main.name
}
