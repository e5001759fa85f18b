variable "project_id" {
  description = "Project of this environment."
  type        = string
}

variable "region" {
  description = "Region for Herald's regional resources."
  type        = string
  default     = "europe-west1"
}

variable "image" {
  description = "Image for the first apply; later images are rolled by Cloud Build. Until the first build exists, Google's sample image works: us-docker.pkg.dev/cloudrun/container/hello:latest."
  type        = string
}

variable "public_base_url" {
  description = "Custom domain for e-mailed links, or null for the ingress run.app URL."
  type        = string
  default     = null
}

variable "iap_members" {
  description = "Who may open the admin UI through IAP."
  type        = set(string)
  default     = []
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids for ops alerts."
  type        = list(string)
  default     = []
}
