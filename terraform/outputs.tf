# Every name the invoke tasks need; `invoke deploy` saves them to .batchspot/outputs.json.

output "region" {
  description = "Region the stack lives in."
  value       = var.region
}

output "queue_url" {
  description = "URL of the work queue (`invoke seed` fills it, the worker drains it)."
  value       = module.queue.queue_url
}

output "queue_arn" {
  description = "ARN of the work queue."
  value       = module.queue.queue_arn
}

output "dlq_url" {
  description = "URL of the dead-letter queue (`invoke redrive` empties it)."
  value       = module.queue.dlq_url
}

output "dlq_alarm_name" {
  description = "CloudWatch alarm that fires when the dead-letter queue is not empty."
  value       = module.queue.dlq_alarm_name
}

output "failure_alarm_name" {
  description = "CloudWatch alarm that fires when too many of the items attempted in 5 minutes failed."
  value       = module.monitoring.failure_alarm_name
}

output "dashboard_name" {
  description = "CloudWatch dashboard of the runs: queue depths, items per minute, durations, calls, memory."
  value       = module.monitoring.dashboard_name
}

output "dashboard_url" {
  description = "Console URL of the dashboard (`invoke status` prints it)."
  value       = module.monitoring.dashboard_url
}

output "input_bucket" {
  description = "Bucket of the source objects."
  value       = module.storage.input_bucket
}

output "output_bucket" {
  description = "Bucket of the JSON results."
  value       = module.storage.output_bucket
}

output "output_prefix" {
  description = "Key prefix of the JSON results."
  value       = var.output_prefix
}

output "ecr_repository_url" {
  description = "Repository `invoke push` pushes the worker image to."
  value       = module.registry.repository_url
}

output "image" {
  description = "Image the job definitions run."
  value       = local.image
}

output "compute_environment_name" {
  description = "Name of the EC2 Spot compute environment."
  value       = module.batch.compute_environment_name
}

output "job_queue" {
  description = "Job queue `invoke submit` submits array jobs to."
  value       = module.batch.job_queue_name
}

output "job_definition" {
  description = "Job definition `invoke submit` submits (its latest revision)."
  value       = module.batch.job_definition_name
}

output "final_job_definition" {
  description = "Job definition of the final step `invoke submit --then` adds after the array job."
  value       = module.batch.final_job_definition_name
}

output "fargate_job_queue" {
  description = "Fargate Spot job queue, null unless enable_fargate_spot."
  value       = module.batch.fargate_job_queue_name
}

output "fargate_job_definition" {
  description = "Fargate Spot job definition, null unless enable_fargate_spot."
  value       = module.batch.fargate_job_definition_name
}

output "log_group" {
  description = "CloudWatch log group of the worker containers (`invoke logs`)."
  value       = module.batch.log_group_name
}

output "job_role_arn" {
  description = "Role the worker runs as."
  value       = module.batch.job_role_arn
}

output "vpc_id" {
  description = "VPC the compute environments run in."
  value       = module.network.vpc_id
}

output "inventory_manifests" {
  description = "Where the input bucket's S3 Inventory manifests arrive (one dated folder a delivery), or null without input_inventory_frequency."
  value       = module.storage.inventory_manifests
}
