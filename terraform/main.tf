# BatchSpot: everything one `terraform apply` (or `invoke deploy`) stands up.

data "aws_caller_identity" "current" {}

locals {
  # Bucket names are global: the account id keeps the defaults unique.
  input_bucket_name  = coalesce(var.input_bucket_name, "${var.name}-input-${data.aws_caller_identity.current.account_id}")
  output_bucket_name = coalesce(var.output_bucket_name, "${var.name}-output-${data.aws_caller_identity.current.account_id}")
  # By digest once `invoke push` printed one: the job runs exactly that image, whatever the tag.
  stack_image = (var.image_digest == null ? "${module.registry.repository_url}:${var.image_tag}"
  : "${module.registry.repository_url}@${var.image_digest}")
  image = coalesce(var.image, local.stack_image)

  worker_environment = {
    S3_QUERY_LIMIT  = var.s3_query_limit
    QUERY_ENGINE    = var.query_engine
    ROWS_FORMAT     = var.rows_format
    HANDLER         = var.handler
    HANDLER_COMMAND = var.handler_command
    HANDLER_TIMEOUT = tostring(var.handler_timeout_seconds)
    # Empty values are left out of the job definition: the worker's default then applies.
    ITEM_TIMEOUT_SECONDS = var.item_timeout_seconds == null ? "" : tostring(var.item_timeout_seconds)
    WORKER_CONCURRENCY   = tostring(var.worker_concurrency)
    IDLE_EXIT_SECONDS    = tostring(var.idle_exit_seconds)
    STOP_GRACE_SECONDS   = tostring(var.stop_grace_seconds)
  }
}

module "network" {
  source = "./modules/network"

  name               = var.name
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids
  vpc_cidr           = var.vpc_cidr
  az_count           = var.az_count
}

module "storage" {
  source = "./modules/storage"

  input_bucket_name       = local.input_bucket_name
  output_bucket_name      = local.output_bucket_name
  output_expiration_days  = var.output_expiration_days
  force_destroy           = var.force_destroy
  deny_insecure_transport = var.deny_insecure_transport

  input_inventory_frequency = var.input_inventory_frequency
}

module "queue" {
  source = "./modules/queue"

  name                       = var.name
  visibility_timeout_seconds = var.visibility_timeout_seconds
  max_receive_count          = var.max_receive_count
  message_retention_seconds  = var.message_retention_seconds
  alarm_actions              = var.dlq_alarm_actions
}

module "registry" {
  source = "./modules/registry"

  name         = var.name
  keep_images  = var.keep_images
  force_delete = var.force_destroy
}

module "batch" {
  source = "./modules/batch"

  name                     = var.name
  subnet_ids               = module.network.subnet_ids
  security_group_ids       = module.network.security_group_ids
  assign_public_ip         = module.network.assign_public_ip
  image                    = local.image
  ecr_repository_arn       = var.image == null ? module.registry.repository_arn : null
  queue_arn                = module.queue.queue_arn
  queue_url                = module.queue.queue_url
  input_bucket_arn         = module.storage.input_bucket_arn
  output_bucket            = module.storage.output_bucket
  output_prefix            = var.output_prefix
  allowed_output_buckets   = var.allowed_output_buckets
  worker_environment       = local.worker_environment
  instance_types           = var.instance_types
  allocation_strategy      = var.allocation_strategy
  bid_percentage           = var.bid_percentage
  max_vcpus                = var.max_vcpus
  enable_fargate_spot      = var.enable_fargate_spot
  fargate_max_vcpus        = var.fargate_max_vcpus
  job_vcpus                = var.job_vcpus
  job_memory_mib           = var.job_memory_mib
  worker_processes         = var.worker_processes
  scratch_mib              = var.scratch_mib
  job_attempts             = var.job_attempts
  job_timeout_seconds      = var.job_timeout_seconds
  runnable_timeout_minutes = var.runnable_timeout_minutes
  log_retention_days       = var.log_retention_days
  use_service_linked_role  = var.use_service_linked_role
  tags                     = merge({ Project = "batchspot", Stack = var.name }, var.tags)
}

module "monitoring" {
  source = "./modules/monitoring"

  name                   = var.name
  region                 = var.region
  job_queue_name         = module.batch.job_queue_name
  queue_name             = module.queue.queue_name
  dlq_name               = module.queue.dlq_name
  dlq_alarm_arn          = module.queue.dlq_alarm_arn
  log_group_name         = module.batch.log_group_name
  job_memory_mib         = module.batch.job_memory_mib
  worker_processes       = module.batch.worker_processes
  failure_rate_threshold = var.failure_rate_alarm_threshold
  alarm_actions          = var.dlq_alarm_actions
}
