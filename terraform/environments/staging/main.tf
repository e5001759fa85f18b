module "herald" {
  source = "../../modules/herald"

  project_id            = var.project_id
  region                = var.region
  environment           = "staging"
  image                 = var.image
  public_base_url       = var.public_base_url
  iap_members           = var.iap_members
  notification_channels = var.notification_channels

  services = {
    worker  = { max_instances = 5 }
    ingress = { min_instances = 0 }
  }
}
