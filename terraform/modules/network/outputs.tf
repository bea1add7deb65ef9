output "vpc_id" {
  description = "VPC of the Batch instances (created or the given subnets' VPC)."
  value       = local.vpc_id
}

output "subnet_ids" {
  description = "Subnets the compute environments launch into."
  value       = local.create_vpc ? aws_subnet.public[*].id : var.subnet_ids
}

output "security_group_ids" {
  description = "Security groups attached to Batch instances and Fargate tasks."
  value       = local.create_sg ? aws_security_group.batch[*].id : var.security_group_ids
}

output "assign_public_ip" {
  description = "Whether tasks need a public address to reach AWS APIs (true for the created VPC, which has no NAT)."
  value       = local.create_vpc
}
