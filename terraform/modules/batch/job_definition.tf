# The worker's job definitions: one for the EC2 Spot queue, one for Fargate Spot when enabled.
#
# Retries: an attempt is retried only when its host went away (a Spot reclaim); every other
# failure ends the job at once (the worker has already returned unfinished messages to the
# queue, and retrying a misconfigured container only burns money). The catch-all EXIT must come
# last: without it, failures that match no rule are retried as well.

locals {
  environment = merge(var.worker_environment, {
    SQS_QUEUE_URL          = var.queue_url
    OUTPUT_BUCKET          = var.output_bucket
    OUTPUT_PREFIX          = var.output_prefix
    ALLOWED_OUTPUT_BUCKETS = join(",", var.allowed_output_buckets)
  })

  container = {
    image            = var.image
    jobRoleArn       = aws_iam_role.job.arn
    executionRoleArn = aws_iam_role.execution.arn
    resourceRequirements = [
      { type = "VCPU", value = tostring(var.job_vcpus) },
      { type = "MEMORY", value = tostring(var.job_memory_mib) },
    ]
    environment = [for name, value in local.environment : { name = name, value = value } if value != ""]
    # The custom code may leave orphaned processes; an init as PID 1 reaps them (no zombies).
    linuxParameters = { initProcessEnabled = true }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "worker"
      }
    }
  }

  reclaim_reasons = {
    EC2     = "Host EC2*"
    FARGATE = "Your Spot Task was interrupted*"
  }
}

resource "aws_batch_job_definition" "ec2" {
  name                  = var.name
  type                  = "container"
  platform_capabilities = ["EC2"]
  propagate_tags        = true
  container_properties  = jsonencode(local.container)

  retry_strategy {
    attempts = var.job_attempts
    evaluate_on_exit {
      on_status_reason = local.reclaim_reasons["EC2"]
      action           = "RETRY"
    }
    evaluate_on_exit {
      on_reason = "*"
      action    = "EXIT"
    }
  }

  timeout {
    attempt_duration_seconds = var.job_timeout_seconds
  }
}

resource "aws_batch_job_definition" "fargate_spot" {
  count = var.enable_fargate_spot ? 1 : 0

  name                  = "${var.name}-fargate"
  type                  = "container"
  platform_capabilities = ["FARGATE"]
  propagate_tags        = true
  container_properties = jsonencode(merge(local.container, {
    networkConfiguration         = { assignPublicIp = var.assign_public_ip ? "ENABLED" : "DISABLED" }
    fargatePlatformConfiguration = { platformVersion = "LATEST" }
  }))

  retry_strategy {
    attempts = var.job_attempts
    evaluate_on_exit {
      on_status_reason = local.reclaim_reasons["FARGATE"]
      action           = "RETRY"
    }
    evaluate_on_exit {
      on_reason = "*"
      action    = "EXIT"
    }
  }

  timeout {
    attempt_duration_seconds = var.job_timeout_seconds
  }
}
