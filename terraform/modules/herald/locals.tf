locals {
  # Names the code knows (defaults in service/herald/settings.py); the drift test in
  # tests/infra compares them with Settings at test time. Each environment has its own
  # project, so these names need no environment prefix.
  names = {
    tasks_queue        = "herald-tasks"
    tick_job           = "herald-tick"
    watchdog_job       = "herald-watchdog"
    watchdog_scheduler = "herald-watchdog"
    # Herald's own events (settings.pubsub_topics: key -> topic id), for other systems.
    herald_topics = {
      runs       = "herald-runs"
      deliveries = "herald-deliveries"
    }
    # Published by other systems, pushed to the worker.
    inbound_topics = {
      business_events = "herald-business-events"
      job_completions = "herald-job-completions"
    }
  }

  # Roles served from the one image (settings.role). Route sets per role:
  #   worker  private: /tasks/*, /scheduler/*, /pubsub/*
  #   ingress public:  /webhooks/*, /l/*, /healthz
  #   admin   IAP:     /admin, /api
  roles = toset(["worker", "ingress", "admin"])

  # Workloads with their own runtime service account: the three services and the job.
  workloads = toset(["worker", "ingress", "admin", "watchdog"])

  # Cloud Run's deterministic URL (https://SERVICE-PROJECT_NUMBER.REGION.run.app) lets a
  # service know its own URL (the OIDC audience it verifies) without a dependency cycle.
  service_urls = {
    for role in local.roles :
    role => "https://herald-${role}-${data.google_project.main.number}.${var.region}.run.app"
  }
  worker_url = local.service_urls["worker"]

  # The first apply runs Google's sample image (docs/deploy.md): no `herald` in it.
  sample_image = startswith(var.image, "us-docker.pkg.dev/cloudrun/container/")
  public_url   = coalesce(var.public_base_url, local.service_urls["ingress"])

  # Inbound topics, pushed to these worker routes.
  push_subscriptions = {
    business_events = { topic = "business_events", path = "/pubsub/events" }
    job_completions = { topic = "job_completions", path = "/pubsub/job-status" }
  }

  labels = merge(var.labels, {
    app         = "herald"
    environment = var.environment
    managed-by  = "terraform"
  })
}

data "google_project" "main" {
  project_id = var.project_id
}
