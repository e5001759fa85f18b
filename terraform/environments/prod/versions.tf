terraform {
  required_version = ">= 1.9"

  # State lives in a versioned bucket created once by hand (docs/deploy.md):
  #   terraform init -backend-config="bucket=<state-bucket>"
  backend "gcs" {
    prefix = "herald/prod"
  }

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 7.0, < 8.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 7.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
