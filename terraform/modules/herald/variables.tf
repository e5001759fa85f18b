variable "project_id" {
  description = "Project that holds one Herald environment. One project per environment keeps resource names equal to the code's defaults."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid Google Cloud project id."
  }
}

variable "region" {
  description = "Region of Cloud Run, Cloud Tasks, Cloud Scheduler, Artifact Registry and the reports bucket."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a region such as europe-west1 (not a zone or multi-region)."
  }
}

variable "environment" {
  description = "Environment name, used in labels and alert names."
  type        = string

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "image" {
  description = "Container image for every Herald service and the watchdog job. Cloud Build replaces it on each deploy; Terraform only sets the first one."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(/[a-z0-9._-]+)+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.image))
    error_message = "image must be a full reference with a tag or digest, e.g. europe-west1-docker.pkg.dev/PROJECT/herald/herald:SHA."
  }
}

variable "firestore_location" {
  description = "Firestore database location (a region or nam5 / eur3). Cannot change after creation."
  type        = string
  default     = "eur3"
}

variable "public_base_url" {
  description = "Public URL of the ingress service used in e-mailed links (a custom domain). Null uses the ingress service's run.app URL."
  type        = string
  default     = null

  validation {
    condition     = var.public_base_url == null || can(regex("^https://[^/]+$", var.public_base_url))
    error_message = "public_base_url must be https://host with no path or trailing slash."
  }
}

variable "services" {
  description = "Scaling and size of each Cloud Run service by role. Concurrency 8 matches gunicorn --workers 1 --threads 8."
  type = object({
    worker = optional(object({
      min_instances = optional(number, 0)
      max_instances = optional(number, 20)
      concurrency   = optional(number, 8)
      cpu           = optional(string, "1")
      memory        = optional(string, "1Gi")
      timeout       = optional(string, "600s")
    }), {})
    ingress = optional(object({
      min_instances = optional(number, 1)
      max_instances = optional(number, 10)
      concurrency   = optional(number, 8)
      cpu           = optional(string, "1")
      memory        = optional(string, "512Mi")
      timeout       = optional(string, "30s")
    }), {})
    admin = optional(object({
      min_instances = optional(number, 0)
      max_instances = optional(number, 2)
      concurrency   = optional(number, 8)
      cpu           = optional(string, "1")
      memory        = optional(string, "512Mi")
      timeout       = optional(string, "60s")
    }), {})
  })
  default = {}

  validation {
    condition = alltrue([
      for s in [var.services.worker, var.services.ingress, var.services.admin] :
      s.min_instances >= 0 && s.max_instances >= max(1, s.min_instances) && s.concurrency >= 1 && s.concurrency <= 1000
    ])
    error_message = "Each service needs 0 <= min_instances <= max_instances, max_instances >= 1 and 1 <= concurrency <= 1000."
  }

  validation {
    condition = alltrue([
      for s in [var.services.worker, var.services.ingress, var.services.admin] :
      can(regex("^[0-9]+s$", s.timeout)) && tonumber(trimsuffix(s.timeout, "s")) <= 3600
    ])
    error_message = "timeout must be whole seconds like \"300s\", at most 3600s."
  }
}

variable "tasks_queue" {
  description = "Dispatch rate limits of the Cloud Tasks queue (its retry config is fixed in tasks.tf)."
  type = object({
    max_dispatches_per_second = optional(number, 20)
    max_concurrent_dispatches = optional(number, 50)
  })
  default = {}

  validation {
    condition     = var.tasks_queue.max_dispatches_per_second > 0 && var.tasks_queue.max_dispatches_per_second <= 500
    error_message = "max_dispatches_per_second must be in (0, 500]."
  }

  validation {
    condition     = var.tasks_queue.max_concurrent_dispatches >= 1 && var.tasks_queue.max_concurrent_dispatches <= 5000
    error_message = "max_concurrent_dispatches must be in [1, 5000]."
  }
}

variable "pubsub" {
  description = "Push subscription tuning. The ack deadline is the push request timeout, so it must exceed the slowest /pubsub handler."
  type = object({
    ack_deadline_seconds  = optional(number, 60)
    minimum_backoff       = optional(string, "10s")
    maximum_backoff       = optional(string, "600s")
    max_delivery_attempts = optional(number, 10)
    retention             = optional(string, "604800s")
  })
  default = {}

  validation {
    condition     = var.pubsub.ack_deadline_seconds >= 10 && var.pubsub.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 10 and 600 (Pub/Sub's limits)."
  }

  validation {
    condition     = var.pubsub.max_delivery_attempts >= 5 && var.pubsub.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
}

variable "reports" {
  description = "Link lifetime and how long rendered reports are kept. Objects must outlive the links that point at them, so an expired link can still be re-issued within retention."
  type = object({
    link_ttl_days  = optional(number, 7)
    retention_days = optional(number, 30)
  })
  default = {}

  validation {
    condition     = var.reports.link_ttl_days >= 1 && var.reports.retention_days >= var.reports.link_ttl_days + 1
    error_message = "retention_days must be at least link_ttl_days + 1: a live link must never point at a deleted report."
  }
}

variable "watchdog" {
  description = "The watchdog Cloud Run Job and its schedule (every 5 minutes by default)."
  type = object({
    schedule = optional(string, "*/5 * * * *")
    timeout  = optional(string, "240s")
  })
  default = {}

  validation {
    condition     = length(split(" ", var.watchdog.schedule)) == 5
    error_message = "schedule must be a five-field cron expression."
  }
}

variable "iap_members" {
  description = "Principals allowed through IAP to the admin service, e.g. [\"group:reporting-ops@example.com\"]."
  type        = set(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.iap_members : can(regex("^(user|group|domain|serviceAccount):", m))])
    error_message = "iap_members entries must start with user:, group:, domain: or serviceAccount:."
  }
}

variable "notification_channels" {
  description = "Ids of existing Cloud Monitoring notification channels for ops alerts (projects/P/notificationChannels/N)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "notification_channels must be full notification channel ids."
  }
}

variable "alerts" {
  description = "Alert thresholds."
  type = object({
    error_ratio       = optional(number, 0.05)
    queue_depth       = optional(number, 1000)
    backlog_duration  = optional(string, "900s")
    dead_letter_count = optional(number, 0)
  })
  default = {}

  validation {
    condition     = var.alerts.error_ratio > 0 && var.alerts.error_ratio < 1
    error_message = "error_ratio is a fraction of requests, between 0 and 1."
  }
}

variable "deletion_protection" {
  description = "Protect the Firestore database and Cloud Run services from terraform destroy."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Extra labels for every labelled resource."
  type        = map(string)
  default     = {}
}
