output "herald" {
  description = "Everything the Herald module exports for this environment (URLs, accounts, bucket, queue, topics, secrets to fill)."
  value       = module.herald
}
