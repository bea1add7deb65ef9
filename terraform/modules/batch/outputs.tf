output "compute_environment_arn" {
  description = "ARN of the EC2 Spot compute environment."
  value       = aws_batch_compute_environment.spot.arn
}

output "compute_environment_name" {
  description = "Name of the EC2 Spot compute environment (generated from the prefix)."
  value       = aws_batch_compute_environment.spot.compute_environment_name
}

output "job_queue_name" {
  description = "Name of the job queue for EC2 Spot."
  value       = aws_batch_job_queue.spot.name
}

output "job_queue_arn" {
  description = "ARN of the job queue for EC2 Spot."
  value       = aws_batch_job_queue.spot.arn
}

output "job_definition_name" {
  description = "Name of the EC2 job definition; submitting by name runs its latest revision."
  value       = aws_batch_job_definition.ec2.name
}

output "job_definition_arn" {
  description = "ARN (with revision) of the EC2 job definition."
  value       = aws_batch_job_definition.ec2.arn
}

output "final_job_definition_name" {
  description = "Name of the final step's job definition (invoke submit --then)."
  value       = aws_batch_job_definition.final.name
}

output "fargate_job_queue_name" {
  description = "Name of the Fargate Spot job queue, null unless enable_fargate_spot."
  value       = one(aws_batch_job_queue.fargate_spot[*].name)
}

output "fargate_job_definition_name" {
  description = "Name of the Fargate Spot job definition, null unless enable_fargate_spot."
  value       = one(aws_batch_job_definition.fargate_spot[*].name)
}

output "log_group_name" {
  description = "CloudWatch log group of the worker containers."
  value       = aws_cloudwatch_log_group.worker.name
}

output "job_role_arn" {
  description = "ARN of the role the worker runs as."
  value       = aws_iam_role.job.arn
}

output "instance_profile_arn" {
  description = "ARN of the ECS instance profile given to the compute environment."
  value       = aws_iam_instance_profile.ecs_instance.arn
}

output "worker_container" {
  description = "What each worker container is given: vCPUs, memory and /tmp tmpfs in MiB, and its environment (known at plan time, unlike the job definition, whose roles are created with it)."
  value = {
    vcpus       = var.job_vcpus
    memory_mib  = local.job_memory_mib
    scratch_mib = var.scratch_mib
    environment = local.environment
  }
}

output "job_memory_mib" {
  description = "Memory of one EC2 worker container (the job definition's MEMORY)."
  value       = local.job_memory_mib
}

output "worker_processes" {
  description = "Worker processes per container (the job definition's WORKER_PROCESSES)."
  value       = local.worker_processes
}
