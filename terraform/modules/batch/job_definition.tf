# The worker's job definitions: one for the EC2 Spot queue, one for Fargate Spot when enabled,
# and the final step's (`invoke submit --then`), which runs after the array job on the same
# queue and Spot compute, with its own role (it lists the results; the worker may not).
#
# Retries (one strategy, `local.retry_rules`, for all three): Batch evaluates the rules only for
# a failed attempt (exit 0 is SUCCEEDED), in order, and the first match wins. An attempt is
# retried when its host went away (a Spot reclaim, after the worker gave its messages back on
# the notice), when the worker exits 3 (custom code hung in every thread: a fresh container
# frees them) or 75 (come back later: a transient start-up error, a Spot notice whose host did
# not go, the attempt's time limit reached with work left; see worker/__main__.py). Every
# other failure ends the child at once: retrying a misconfigured container (exit 2) only burns
# money. The catch-all EXIT must come last: without it, failures that match no rule are
# retried as well. The worker is told the attempt timeout (JOB_TIMEOUT_SECONDS), since Batch
# never retries an attempt it stopped for running too long.

locals {
  # One worker process per vCPU (worker/processes.py). Set here rather than left to the
  # worker's `auto`: on EC2, Batch gives a container CPU shares, not a quota, and the worker
  # would see every CPU of the host.
  worker_processes = coalesce(var.worker_processes, max(1, floor(var.job_vcpus)))
  # Sized from the worker's measured peak RSS per process (bench/worker_memory.py, README
  # "Measured, not claimed"): 284 MiB at most, with the fast path loaded, so 320 MiB each,
  # plus 256 MiB for the supervisor and the custom code, plus the /tmp tmpfs, which is charged
  # to the container's memory. The heaviest default mix (every thread of 2 processes scanning
  # and streaming to a command) peaked at 285 MiB of the 1152 (tests/container). Fargate asks
  # at least 2 GiB per vCPU (512 MiB at 0.25).
  job_memory_mib     = coalesce(var.job_memory_mib, local.worker_processes * 320 + 256 + var.scratch_mib)
  fargate_memory_mib = var.job_memory_mib != null ? var.job_memory_mib : max(local.job_memory_mib, 2048 * var.job_vcpus)

  # CODE_VERSION keys the results by the code that made them (worker/keys.py); `invoke submit`
  # replaces it with the image's digest when ECR knows it. A worker_environment entry wins.
  environment = merge({ CODE_VERSION = var.image, WORKER_PROCESSES = tostring(local.worker_processes) }, var.worker_environment, {
    JOB_TIMEOUT_SECONDS    = tostring(var.job_timeout_seconds)
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
      { type = "MEMORY", value = tostring(local.job_memory_mib) },
    ]
    environment = [for name, value in local.environment : { name = name, value = value } if value != ""]
    # The image's files cannot be changed by the worker or the custom code. What they write (a
    # command's output, spooled until it is stored; the final step's merge) goes to /tmp, a
    # tmpfs charged to the container's memory, which job_memory_mib counts.
    readonlyRootFilesystem = true
    linuxParameters = {
      # The custom code may leave orphaned processes; an init as PID 1 reaps them (no zombies).
      initProcessEnabled = true
      tmpfs              = [{ containerPath = "/tmp", size = var.scratch_mib, mountOptions = ["rw", "nosuid", "nodev", "mode=1777"] }]
    }
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
  # The worker's exit codes that ask for a fresh attempt: 3 stuck, 75 come back later.
  retried_exit_codes = ["3", "75"]
  retry_rules = {
    for platform, reclaim in local.reclaim_reasons : platform => concat(
      [{ action = "RETRY", on_status_reason = reclaim, on_exit_code = null, on_reason = null }],
      [for code in local.retried_exit_codes : { action = "RETRY", on_status_reason = null, on_exit_code = code, on_reason = null }],
      [{ action = "EXIT", on_status_reason = null, on_exit_code = null, on_reason = "*" }],
    )
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
    dynamic "evaluate_on_exit" {
      for_each = local.retry_rules["EC2"]
      content {
        action           = evaluate_on_exit.value.action
        on_status_reason = evaluate_on_exit.value.on_status_reason
        on_exit_code     = evaluate_on_exit.value.on_exit_code
        on_reason        = evaluate_on_exit.value.on_reason
      }
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
    resourceRequirements = [
      { type = "VCPU", value = tostring(var.job_vcpus) },
      { type = "MEMORY", value = tostring(local.fargate_memory_mib) },
    ]
    networkConfiguration         = { assignPublicIp = var.assign_public_ip ? "ENABLED" : "DISABLED" }
    fargatePlatformConfiguration = { platformVersion = "LATEST" }
    # Fargate has no tmpfs: /tmp is a volume on the task's ephemeral storage (20 GiB).
    linuxParameters = { initProcessEnabled = true }
    volumes         = [{ name = "scratch" }]
    mountPoints     = [{ sourceVolume = "scratch", containerPath = "/tmp", readOnly = false }]
  }))

  retry_strategy {
    attempts = var.job_attempts
    dynamic "evaluate_on_exit" {
      for_each = local.retry_rules["FARGATE"]
      content {
        action           = evaluate_on_exit.value.action
        on_status_reason = evaluate_on_exit.value.on_status_reason
        on_exit_code     = evaluate_on_exit.value.on_exit_code
        on_reason        = evaluate_on_exit.value.on_reason
      }
    }
  }

  timeout {
    attempt_duration_seconds = var.job_timeout_seconds
  }
}

resource "aws_batch_job_definition" "final" {
  name                  = "${var.name}-final"
  type                  = "container"
  platform_capabilities = ["EC2"]
  propagate_tags        = true
  container_properties = jsonencode(merge(local.container, {
    command    = ["python", "-m", "worker.final"]
    jobRoleArn = aws_iam_role.final.arn
  }))

  retry_strategy {
    attempts = var.job_attempts
    dynamic "evaluate_on_exit" {
      for_each = local.retry_rules["EC2"]
      content {
        action           = evaluate_on_exit.value.action
        on_status_reason = evaluate_on_exit.value.on_status_reason
        on_exit_code     = evaluate_on_exit.value.on_exit_code
        on_reason        = evaluate_on_exit.value.on_reason
      }
    }
  }

  timeout {
    attempt_duration_seconds = var.job_timeout_seconds
  }
}
