# One service account per caller, each with only what its calls need.
#
#   runtime[worker|ingress|admin|watchdog]  identities of the workloads
#   invoker[tasks]      Cloud Tasks -> worker /tasks/*       (OIDC)
#   invoker[pubsub]     Pub/Sub push -> worker /pubsub/*     (OIDC)
#   invoker[scheduler]  Cloud Scheduler -> worker /scheduler/tick (OIDC), watchdog job run (OAuth)
#   deployer            Cloud Build: push the image, roll services and the job

resource "google_service_account" "runtime" {
  for_each = local.workloads

  project      = var.project_id
  account_id   = "herald-${each.key}"
  display_name = "Herald ${each.key} runtime"
  description  = "Identity of the Herald ${each.key} workload (${var.environment})."
}

locals {
  invokers = {
    tasks     = "Cloud Tasks -> Herald worker (OIDC)"
    pubsub    = "Pub/Sub push -> Herald worker (OIDC)"
    scheduler = "Cloud Scheduler -> Herald tick and watchdog job"
  }

  # What each runtime may do beyond reading its own secrets (secrets.tf).
  runtime_access = {
    worker   = { firestore = true, bucket_role = "roles/storage.objectAdmin", enqueue = true, publish = true, scheduler_viewer = true, sign = true }
    ingress  = { firestore = true, bucket_role = "roles/storage.objectViewer", enqueue = true, publish = false, scheduler_viewer = false, sign = true }
    admin    = { firestore = true, bucket_role = "roles/storage.objectViewer", enqueue = true, publish = true, scheduler_viewer = false, sign = true }
    watchdog = { firestore = true, bucket_role = null, enqueue = false, publish = false, scheduler_viewer = true, sign = false }
  }
}

resource "google_service_account" "invoker" {
  for_each = local.invokers

  project      = var.project_id
  account_id   = "herald-${each.key}-invoker"
  display_name = "Herald ${each.key} invoker"
  description  = each.value
}

resource "google_service_account" "deployer" {
  project      = var.project_id
  account_id   = "herald-deployer"
  display_name = "Herald deployer (Cloud Build)"
  description  = "Builds and pushes the image, then rolls the services and the watchdog job to it."
}

# Firestore IAM exists only at project level.
resource "google_project_iam_member" "runtime_firestore" {
  for_each = { for w, a in local.runtime_access : w => a if a.firestore }

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.runtime[each.key].member
}

# Reading the tick job's state for the watchdog's "is the tick alive" check; Cloud
# Scheduler has no per-job IAM.
resource "google_project_iam_member" "runtime_scheduler_viewer" {
  for_each = { for w, a in local.runtime_access : w => a if a.scheduler_viewer }

  project = var.project_id
  role    = "roles/cloudscheduler.viewer"
  member  = google_service_account.runtime[each.key].member
}

# On Cloud Run there is no private key: V4 signed URLs are signed through IAM signBlob
# as the runtime itself, and only as itself.
resource "google_service_account_iam_member" "runtime_self_sign" {
  for_each = { for w, a in local.runtime_access : w => a if a.sign }

  service_account_id = google_service_account.runtime[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.runtime[each.key].member
}

# Creating a task whose OIDC token is minted as the tasks invoker requires actAs on it.
resource "google_service_account_iam_member" "runtime_acts_as_tasks_invoker" {
  for_each = { for w, a in local.runtime_access : w => a if a.enqueue }

  service_account_id = google_service_account.invoker["tasks"].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.runtime[each.key].member
}

# Pub/Sub mints the push OIDC token as the push invoker. Projects created before
# 2021-04-08 need this grant explicitly:
# https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.invoker["pubsub"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_project_service_identity.main["pubsub.googleapis.com"].email}"
}

# Deployer: roll revisions (run.developer has no setIamPolicy), act as the runtimes it
# deploys, push images, write build logs, and apply the report definitions to Firestore
# (cloudbuild.yaml step apply-definitions; Firestore IAM exists only at project level).
resource "google_project_iam_member" "deployer" {
  for_each = toset(["roles/run.developer", "roles/logging.logWriter", "roles/datastore.user"])

  project = var.project_id
  role    = each.value
  member  = google_service_account.deployer.member
}

# Resuming the watchdog's schedule after the first real image (scheduler.tf). jobs:resume
# needs cloudscheduler.jobs.enable; no predefined role has it without create / delete.
resource "google_project_iam_custom_role" "deployer_scheduler" {
  project     = var.project_id
  role_id     = "heraldDeployerScheduler"
  title       = "Herald deployer: resume the watchdog schedule"
  description = "Read and resume Cloud Scheduler jobs (cloudbuild.yaml step resume-watchdog)."
  permissions = ["cloudscheduler.jobs.get", "cloudscheduler.jobs.enable"]
}

resource "google_project_iam_member" "deployer_scheduler" {
  project = var.project_id
  role    = google_project_iam_custom_role.deployer_scheduler.id
  member  = google_service_account.deployer.member
}

resource "google_service_account_iam_member" "deployer_acts_as_runtime" {
  for_each = local.workloads

  service_account_id = google_service_account.runtime[each.key].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer.member
}
