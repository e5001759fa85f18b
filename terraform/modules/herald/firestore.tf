resource "google_firestore_database" "main" {
  project     = var.project_id
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.main]
}

# The code declares the composite indexes and field overrides its queries need, in the
# Firebase CLI format; Terraform creates exactly those (the drift test checks the mapping).
locals {
  firestore_spec = jsondecode(file("${path.module}/../../../service/herald/adapters/gcp/firestore_indexes.json"))

  firestore_indexes = {
    for idx in try(local.firestore_spec.indexes, []) :
    join("|", concat(
      [idx.collectionGroup, try(idx.queryScope, "COLLECTION")],
      [for f in idx.fields : "${f.fieldPath}:${try(f.order, f.arrayConfig)}"],
    )) => idx
  }

  # Field overrides: TTL policies ("ttl": true) and single-field index exemptions
  # ("indexes": [] turns indexing off for large or never-queried fields).
  firestore_fields = {
    for o in try(local.firestore_spec.fieldOverrides, []) :
    "${o.collectionGroup}/${o.fieldPath}" => o
  }
}

resource "google_firestore_index" "main" {
  for_each = local.firestore_indexes

  project     = var.project_id
  database    = google_firestore_database.main.name
  collection  = each.value.collectionGroup
  query_scope = try(each.value.queryScope, "COLLECTION")

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path   = fields.value.fieldPath
      order        = try(fields.value.order, null)
      array_config = try(fields.value.arrayConfig, null)
    }
  }
}

resource "google_firestore_field" "main" {
  for_each = local.firestore_fields

  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = each.value.collectionGroup
  field      = each.value.fieldPath

  # Documents are deleted (within about a day) once this timestamp has passed.
  dynamic "ttl_config" {
    for_each = try(each.value.ttl, false) ? [true] : []
    content {}
  }

  # An empty list drops the field's single-field indexes: TTL timestamps are never
  # queried (and would hot-spot), large blobs would hit the index-entry size limit.
  dynamic "index_config" {
    for_each = can(each.value.indexes) ? [each.value.indexes] : []
    content {
      dynamic "indexes" {
        for_each = index_config.value
        content {
          query_scope  = try(indexes.value.queryScope, null)
          order        = try(indexes.value.order, null)
          array_config = try(indexes.value.arrayConfig, null)
        }
      }
    }
  }
}
