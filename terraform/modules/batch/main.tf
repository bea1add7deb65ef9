# Compute environments, job queues, the worker's job definitions and its log group.
#
# Compute environments are replaced, never edited in place: many of their attributes (the
# allocation strategy among them) force a new one. A name prefix and create_before_destroy let
# Terraform build the new environment, repoint the job queue, then delete the old one, so the
# queue never points at a deleted environment.

data "aws_region" "current" {}

locals {
  service_role_arn = var.use_service_linked_role ? null : aws_iam_role.batch_service[0].arn

  # Jobs that cannot start are cancelled instead of blocking the queue forever.
  runnable_reasons = [
    "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
    "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
  ]
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/aws/batch/${var.name}"
  retention_in_days = var.log_retention_days

  #checkov:skip=CKV_AWS_158:Worker logs hold item keys and error messages, no data; CloudWatch encrypts them at rest with its own keys.
  #checkov:skip=CKV_AWS_338:Retention is the log_retention_days variable (30 by default): batch logs matter for days, a year of them costs.
}

resource "aws_launch_template" "spot" {
  name_prefix = "${var.name}-spot-"
  description = "BatchSpot instances: IMDSv2 only, encrypted root volume"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_size_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  #checkov:skip=CKV_AWS_341:The worker reads the Spot interruption notice from IMDSv2 inside a bridge-networked container, one hop further than the host.
}

resource "aws_batch_compute_environment" "spot" {
  compute_environment_name_prefix = "${var.name}-spot-"
  type                            = "MANAGED"
  service_role                    = local.service_role_arn

  compute_resources {
    type                = "SPOT"
    allocation_strategy = var.allocation_strategy
    bid_percentage      = var.bid_percentage
    spot_iam_fleet_role = local.needs_spot_fleet_role ? aws_iam_role.spot_fleet[0].arn : null
    instance_role       = aws_iam_instance_profile.ecs_instance.arn
    instance_type       = var.instance_types
    min_vcpus           = 0
    max_vcpus           = var.max_vcpus
    subnets             = var.subnet_ids
    security_group_ids  = var.security_group_ids
    tags                = merge(var.tags, { Name = "${var.name}-spot" })

    launch_template {
      launch_template_id = aws_launch_template.spot.id
      version            = aws_launch_template.spot.latest_version
    }
  }

  lifecycle {
    create_before_destroy = true
    # Batch moves desired vCPUs as jobs come and go; it is not configuration.
    ignore_changes = [compute_resources[0].desired_vcpus]
  }

  # Batch needs its role while it tears the environment down, and instances need theirs to join.
  depends_on = [
    aws_iam_role_policy_attachment.batch_service,
    aws_iam_role_policy_attachment.ecs_instance,
    aws_iam_role_policy_attachment.spot_fleet,
  ]
}

resource "aws_batch_compute_environment" "fargate_spot" {
  count = var.enable_fargate_spot ? 1 : 0

  compute_environment_name_prefix = "${var.name}-fargate-spot-"
  type                            = "MANAGED"
  service_role                    = local.service_role_arn

  compute_resources {
    type               = "FARGATE_SPOT"
    max_vcpus          = var.fargate_max_vcpus
    subnets            = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [aws_iam_role_policy_attachment.batch_service]
}

resource "aws_batch_job_queue" "spot" {
  name     = var.name
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.spot.arn
  }

  dynamic "job_state_time_limit_action" {
    for_each = local.runnable_reasons
    content {
      action           = "CANCEL"
      state            = "RUNNABLE"
      reason           = job_state_time_limit_action.value
      max_time_seconds = var.runnable_timeout_minutes * 60
    }
  }
}

# A job queue cannot mix EC2 and Fargate environments, so Fargate Spot has its own.
resource "aws_batch_job_queue" "fargate_spot" {
  count = var.enable_fargate_spot ? 1 : 0

  name     = "${var.name}-fargate"
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.fargate_spot[0].arn
  }

  dynamic "job_state_time_limit_action" {
    for_each = local.runnable_reasons
    content {
      action           = "CANCEL"
      state            = "RUNNABLE"
      reason           = job_state_time_limit_action.value
      max_time_seconds = var.runnable_timeout_minutes * 60
    }
  }
}
