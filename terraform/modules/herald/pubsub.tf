resource "google_pubsub_topic" "main" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption is the accepted baseline for Herald; CMEK would add a KMS key and its IAM per environment for no requirement we have (messages carry ids and event fields, not report content).
  for_each = merge(local.names.inbound_topics, local.names.herald_topics)

  project = var.project_id
  name    = each.value
  labels  = local.labels
  # Keep a week of messages so a subscription can seek back after an incident.
  message_retention_duration = "604800s"

  depends_on = [google_project_service.main]
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption is the accepted baseline for Herald; CMEK would add a KMS key and its IAM per environment for no requirement we have (same messages as the source topics).
  for_each = local.push_subscriptions

  project = var.project_id
  name    = "${local.names.inbound_topics[each.value.topic]}-dead-letter"
  labels  = local.labels
}

# Push to the worker with an OIDC token minted as the push invoker; the handler checks
# audience, e-mail and email_verified (ARCHITECTURE.md decision 6).
#
# Business events arrive at /pubsub/events, one subscription for every source system, so
# each message must name its source: the `source` message attribute (or a "source" field
# in the JSON data), e.g. `gcloud pubsub topics publish herald-business-events
# --attribute=source=erp --message='{"id": "...", "type": "period.closed", "data": {...}}'`.
# It must match a trigger's `source` in the definitions; a message without one is
# refused (400) and dead-lettered. docs/deploy.md "Publishing business events".
resource "google_pubsub_subscription" "main" {
  for_each = local.push_subscriptions

  project = var.project_id
  name    = "${local.names.inbound_topics[each.value.topic]}-push"
  topic   = google_pubsub_topic.main[each.value.topic].id
  labels  = local.labels

  # For push, the ack deadline is the HTTP request timeout.
  ack_deadline_seconds       = var.pubsub.ack_deadline_seconds
  message_retention_duration = var.pubsub.retention

  push_config {
    push_endpoint = "${local.worker_url}${each.value.path}"

    oidc_token {
      service_account_email = google_service_account.invoker["pubsub"].email
      audience              = local.worker_url
    }
  }

  retry_policy {
    minimum_backoff = var.pubsub.minimum_backoff
    maximum_backoff = var.pubsub.maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.pubsub.max_delivery_attempts
  }

  # Never expire for inactivity: a quiet month must not delete the subscription.
  expiration_policy {
    ttl = ""
  }
}

# Without a subscription a dead-letter topic drops what it receives; this one keeps the
# messages for inspection and replay (docs/deploy.md).
resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.push_subscriptions

  project                    = var.project_id
  name                       = "${google_pubsub_topic.dead_letter[each.key].name}-hold"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  labels                     = local.labels
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the
# dead-letter topic and acknowledge on the source subscription.
# https://cloud.google.com/pubsub/docs/handling-failures#grant_forwarding_permissions
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.push_subscriptions

  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.key].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_project_service_identity.main["pubsub.googleapis.com"].email}"
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = local.push_subscriptions

  project      = var.project_id
  subscription = google_pubsub_subscription.main[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_project_service_identity.main["pubsub.googleapis.com"].email}"
}

# Herald publishes its own events (runs, deliveries) for other systems to subscribe to.
resource "google_pubsub_topic_iam_member" "runtime_publisher" {
  for_each = merge([
    for w, a in local.runtime_access : {
      for t in keys(local.names.herald_topics) : "${w}/${t}" => { workload = w, topic = t }
    } if a.publish
  ]...)

  project = var.project_id
  topic   = google_pubsub_topic.main[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.runtime[each.value.workload].member
}
