# Roles: Batch's service role, the ECS instance role and its instance profile, a Spot Fleet role
# only for BEST_FIT, the task execution role (image pull, logs) and the job role (the worker's
# own permissions, least privilege). AWS managed policies are used only for the roles AWS
# services assume to manage capacity, never for the worker.

data "aws_partition" "current" {}

locals {
  managed_policy_prefix = "arn:${data.aws_partition.current.partition}:iam::aws:policy"
  needs_spot_fleet_role = var.allocation_strategy == "BEST_FIT"
}

data "aws_iam_policy_document" "assume" {
  for_each = toset(["batch", "ec2", "ecs-tasks", "spotfleet"])

  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["${each.key}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "batch_service" {
  count = var.use_service_linked_role ? 0 : 1

  name_prefix        = "${var.name}-batch-"
  assume_role_policy = data.aws_iam_policy_document.assume["batch"].json
}

resource "aws_iam_role_policy_attachment" "batch_service" {
  count = var.use_service_linked_role ? 0 : 1

  role       = aws_iam_role.batch_service[0].name
  policy_arn = "${local.managed_policy_prefix}/service-role/AWSBatchServiceRole"
}

# Without AmazonEC2ContainerServiceforEC2Role the ECS agent never registers and jobs stay RUNNABLE.
resource "aws_iam_role" "ecs_instance" {
  name_prefix        = "${var.name}-instance-"
  assume_role_policy = data.aws_iam_policy_document.assume["ec2"].json
}

resource "aws_iam_role_policy_attachment" "ecs_instance" {
  role       = aws_iam_role.ecs_instance.name
  policy_arn = "${local.managed_policy_prefix}/service-role/AmazonEC2ContainerServiceforEC2Role"
}

# Batch's instance_role takes the instance PROFILE's ARN, not the role's.
resource "aws_iam_instance_profile" "ecs_instance" {
  name_prefix = "${var.name}-instance-"
  role        = aws_iam_role.ecs_instance.name
}

resource "aws_iam_role" "spot_fleet" {
  count = local.needs_spot_fleet_role ? 1 : 0

  name_prefix        = "${var.name}-spotfleet-"
  assume_role_policy = data.aws_iam_policy_document.assume["spotfleet"].json
}

resource "aws_iam_role_policy_attachment" "spot_fleet" {
  count = local.needs_spot_fleet_role ? 1 : 0

  role       = aws_iam_role.spot_fleet[0].name
  policy_arn = "${local.managed_policy_prefix}/service-role/AmazonEC2SpotFleetTaggingRole"
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  assume_role_policy = data.aws_iam_policy_document.assume["ecs-tasks"].json
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions
  }

  dynamic "statement" {
    for_each = var.ecr_repository_arn == null ? [] : [var.ecr_repository_arn]
    content {
      sid       = "PullWorkerImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = [statement.value]
    }
  }

  statement {
    sid       = "WriteWorkerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.worker.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-image-and-log"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "job" {
  name_prefix        = "${var.name}-job-"
  assume_role_policy = data.aws_iam_policy_document.assume["ecs-tasks"].json
}

# The worker's own permissions, in a module of their own so that tests run the worker under
# exactly this document (modules/worker_policy explains what it grants and why no ListBucket).
module "worker_policy" {
  source = "../worker_policy"

  queue_arn        = var.queue_arn
  input_bucket_arn = var.input_bucket_arn
  output_buckets   = concat([var.output_bucket], var.allowed_output_buckets)
  output_prefix    = var.output_prefix
}

resource "aws_iam_role_policy" "job" {
  name   = "worker"
  role   = aws_iam_role.job.id
  policy = module.worker_policy.json
}

# The final step (python -m worker.final) has its own role: the worker records failures under
# its own prefix and may not list, but the final step must list the results to build the
# manifest under runs/ (modules/final_policy says what it grants).
resource "aws_iam_role" "final" {
  name_prefix        = "${var.name}-final-"
  assume_role_policy = data.aws_iam_policy_document.assume["ecs-tasks"].json
}

module "final_policy" {
  source = "../final_policy"

  queue_arn     = var.queue_arn
  output_bucket = var.output_bucket
  output_prefix = var.output_prefix
}

resource "aws_iam_role_policy" "final" {
  name   = "final-step"
  role   = aws_iam_role.final.id
  policy = module.final_policy.json
}
