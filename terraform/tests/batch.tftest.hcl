# Plan-level behaviour of modules/batch, offline against a mocked AWS provider with realistic ARNs.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/batchspot-instance-20260101000000000000000002" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/batch/batchspot" }
  }
}

# Every role, environment, queue and job definition gets its own ARN, so an assert comparing
# wiring (jobRoleArn, service role, queue order, outputs) fails when two of them are swapped.

override_resource {
  target = aws_iam_role.batch_service
  values = { id = "batchspot-batch-20260101000000000000000011", name = "batchspot-batch-20260101000000000000000011", arn = "arn:aws:iam::123456789012:role/batchspot-batch-20260101000000000000000011" }
}

override_resource {
  target = aws_iam_role.ecs_instance
  values = { id = "batchspot-instance-20260101000000000000000012", name = "batchspot-instance-20260101000000000000000012", arn = "arn:aws:iam::123456789012:role/batchspot-instance-20260101000000000000000012" }
}

override_resource {
  target = aws_iam_role.spot_fleet
  values = { id = "batchspot-spotfleet-20260101000000000000000013", name = "batchspot-spotfleet-20260101000000000000000013", arn = "arn:aws:iam::123456789012:role/batchspot-spotfleet-20260101000000000000000013" }
}

override_resource {
  target = aws_iam_role.execution
  values = { id = "batchspot-exec-20260101000000000000000014", name = "batchspot-exec-20260101000000000000000014", arn = "arn:aws:iam::123456789012:role/batchspot-exec-20260101000000000000000014" }
}

override_resource {
  target = aws_iam_role.job
  values = { id = "batchspot-job-20260101000000000000000015", name = "batchspot-job-20260101000000000000000015", arn = "arn:aws:iam::123456789012:role/batchspot-job-20260101000000000000000015" }
}

override_resource {
  target = aws_iam_role.final
  values = { id = "batchspot-final-20260101000000000000000016", name = "batchspot-final-20260101000000000000000016", arn = "arn:aws:iam::123456789012:role/batchspot-final-20260101000000000000000016" }
}

override_resource {
  target = aws_batch_compute_environment.spot
  values = { arn = "arn:aws:batch:us-east-1:123456789012:compute-environment/batchspot-spot-20260101000000000000000021" }
}

override_resource {
  target = aws_batch_compute_environment.fargate_spot
  values = { arn = "arn:aws:batch:us-east-1:123456789012:compute-environment/batchspot-fargate-20260101000000000000000022" }
}

override_resource {
  target = aws_batch_job_queue.spot
  values = { arn = "arn:aws:batch:us-east-1:123456789012:job-queue/batchspot" }
}

override_resource {
  target = aws_batch_job_queue.fargate_spot
  values = { arn = "arn:aws:batch:us-east-1:123456789012:job-queue/batchspot-fargate" }
}

override_resource {
  target = aws_batch_job_definition.ec2
  values = { arn = "arn:aws:batch:us-east-1:123456789012:job-definition/batchspot:1" }
}

override_resource {
  target = aws_batch_job_definition.fargate_spot
  values = { arn = "arn:aws:batch:us-east-1:123456789012:job-definition/batchspot-fargate:1" }
}

override_resource {
  target = aws_batch_job_definition.final
  values = { arn = "arn:aws:batch:us-east-1:123456789012:job-definition/batchspot-final:1" }
}

# The real provider, offline: it renders policy documents locally, so the job role's policy can be
# checked as AWS will receive it (the mock above only invents a json string).
provider "aws" {
  alias                       = "offline"
  region                      = "us-east-1"
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
}

variables {
  name               = "batchspot"
  subnet_ids         = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
  security_group_ids = ["sg-0cccccccccccccccc"]
  image              = "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot:latest"
  ecr_repository_arn = "arn:aws:ecr:us-east-1:123456789012:repository/batchspot"
  queue_arn          = "arn:aws:sqs:us-east-1:123456789012:batchspot"
  queue_url          = "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot"
  input_bucket_arn   = "arn:aws:s3:::batchspot-input-123456789012"
  output_bucket      = "batchspot-output-123456789012"
  worker_environment = { S3_QUERY_LIMIT = "10000", HANDLER = "" }
}

run "spot_compute_environment_uses_the_instance_profile" {
  module {
    source = "./modules/batch"
  }
  command = apply

  assert {
    condition     = aws_batch_compute_environment.spot.type == "MANAGED" && aws_batch_compute_environment.spot.compute_resources[0].type == "SPOT"
    error_message = "The compute environment must be MANAGED with SPOT resources."
  }
  assert {
    condition     = aws_batch_compute_environment.spot.compute_resources[0].instance_role == aws_iam_instance_profile.ecs_instance.arn
    error_message = "instance_role takes the instance PROFILE ARN (a role ARN leaves the environment INVALID)."
  }
  assert {
    condition     = strcontains(aws_batch_compute_environment.spot.compute_resources[0].instance_role, ":instance-profile/")
    error_message = "instance_role must be an instance-profile ARN."
  }
  assert {
    condition     = aws_iam_instance_profile.ecs_instance.role == "batchspot-instance-20260101000000000000000012"
    error_message = "The instance profile must carry the ECS instance role (the one with AmazonEC2ContainerServiceforEC2Role)."
  }
  assert {
    condition     = aws_batch_compute_environment.spot.compute_resources[0].allocation_strategy == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    error_message = "The default allocation strategy must be SPOT_PRICE_CAPACITY_OPTIMIZED."
  }
  assert {
    condition = (aws_batch_compute_environment.spot.compute_resources[0].min_vcpus == 0
      && aws_batch_compute_environment.spot.compute_resources[0].max_vcpus == 128
    && aws_batch_compute_environment.spot.compute_resources[0].instance_type == toset(["optimal"]))
    error_message = "Defaults must be 0 to 128 vCPUs of \"optimal\" instances."
  }
  assert {
    condition     = aws_batch_compute_environment.spot.compute_resources[0].spot_iam_fleet_role == null && length(aws_iam_role.spot_fleet) == 0
    error_message = "SPOT_PRICE_CAPACITY_OPTIMIZED needs no Spot Fleet role; none may be created."
  }
  assert {
    condition     = startswith(aws_batch_compute_environment.spot.compute_environment_name_prefix, "batchspot-spot-")
    error_message = "The environment must be named by prefix, so it can be replaced before it is destroyed."
  }
  assert {
    condition     = aws_batch_compute_environment.spot.compute_resources[0].launch_template[0].launch_template_id == aws_launch_template.spot.id
    error_message = "The environment must launch from the IMDSv2 launch template."
  }
  assert {
    condition     = aws_launch_template.spot.metadata_options[0].http_tokens == "required"
    error_message = "The launch template must require IMDSv2."
  }
  assert {
    condition     = aws_batch_compute_environment.spot.service_role == "arn:aws:iam::123456789012:role/batchspot-batch-20260101000000000000000011"
    error_message = "The environment must use the created Batch service role by default."
  }
  assert {
    condition     = length(aws_batch_compute_environment.fargate_spot) == 0 && length(aws_batch_job_queue.fargate_spot) == 0 && length(aws_batch_job_definition.fargate_spot) == 0
    error_message = "Fargate Spot must be off by default."
  }
}

run "job_queue_cancels_jobs_stuck_in_runnable" {
  module {
    source = "./modules/batch"
  }
  command = apply

  variables {
    runnable_timeout_minutes = 45
  }

  assert {
    condition     = aws_batch_job_queue.spot.compute_environment_order[0].compute_environment == "arn:aws:batch:us-east-1:123456789012:compute-environment/batchspot-spot-20260101000000000000000021"
    error_message = "The job queue must point at the Spot compute environment."
  }
  assert {
    condition = toset([for a in aws_batch_job_queue.spot.job_state_time_limit_action : a.reason]) == toset([
      "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
      "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
      "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
    ])
    error_message = "Jobs blocked by capacity or misconfiguration must all be covered."
  }
  assert {
    condition = alltrue([for a in aws_batch_job_queue.spot.job_state_time_limit_action :
    a.action == "CANCEL" && a.state == "RUNNABLE" && a.max_time_seconds == 2700])
    error_message = "Stuck jobs must be cancelled from RUNNABLE after runnable_timeout_minutes."
  }
}

run "job_definition_runs_the_worker_with_its_environment" {
  module {
    source = "./modules/batch"
  }
  command = apply

  assert {
    condition     = jsondecode(aws_batch_job_definition.ec2.container_properties).image == var.image
    error_message = "The job definition must run the given image."
  }
  assert {
    condition = { for e in jsondecode(aws_batch_job_definition.ec2.container_properties).environment : e.name => e.value } == {
      SQS_QUEUE_URL       = var.queue_url
      OUTPUT_BUCKET       = var.output_bucket
      OUTPUT_PREFIX       = "results/"
      S3_QUERY_LIMIT      = "10000"
      CODE_VERSION        = var.image
      WORKER_PROCESSES    = "2"
      JOB_TIMEOUT_SECONDS = "21600"
    }
    error_message = "The environment must name the queue, the output bucket and prefix, the query limit and the attempt timeout, and leave empty settings out."
  }
  assert {
    condition = { for r in jsondecode(aws_batch_job_definition.ec2.container_properties).resourceRequirements : r.type => r.value } == {
      VCPU = "2", MEMORY = "1152"
    }
    error_message = "vCPU must follow job_vcpus, and memory default to 320 MiB per worker process plus 256 MiB plus the scratch tmpfs."
  }
  assert {
    condition     = jsondecode(aws_batch_job_definition.ec2.container_properties).jobRoleArn == "arn:aws:iam::123456789012:role/batchspot-job-20260101000000000000000015"
    error_message = "The worker must run as the job role."
  }
  assert {
    condition     = jsondecode(aws_batch_job_definition.ec2.container_properties).executionRoleArn == "arn:aws:iam::123456789012:role/batchspot-exec-20260101000000000000000014"
    error_message = "The image must be pulled and logs written with the execution role."
  }
  assert {
    condition = (output.job_role_arn == "arn:aws:iam::123456789012:role/batchspot-job-20260101000000000000000015"
      && output.job_definition_arn == "arn:aws:batch:us-east-1:123456789012:job-definition/batchspot:1"
    && output.job_queue_arn == "arn:aws:batch:us-east-1:123456789012:job-queue/batchspot")
    error_message = "Outputs must name the job role, the EC2 job definition and the Spot job queue."
  }
  assert {
    condition     = jsondecode(aws_batch_job_definition.ec2.container_properties).linuxParameters.initProcessEnabled == true
    error_message = "The container must run an init as PID 1, so processes orphaned by custom code are reaped."
  }
  assert {
    condition = alltrue([for definition in [aws_batch_job_definition.ec2, aws_batch_job_definition.final] :
      jsondecode(definition.container_properties).readonlyRootFilesystem == true
      && jsondecode(definition.container_properties).linuxParameters.tmpfs == [
        { containerPath = "/tmp", size = 256, mountOptions = ["rw", "nosuid", "nodev", "mode=1777"] }
    ]])
    error_message = "The worker and the final step must run on a read-only root, writing only to a tmpfs /tmp of scratch_mib."
  }
  assert {
    condition = (jsondecode(aws_batch_job_definition.ec2.container_properties).logConfiguration.logDriver == "awslogs"
    && jsondecode(aws_batch_job_definition.ec2.container_properties).logConfiguration.options["awslogs-group"] == aws_cloudwatch_log_group.worker.name)
    error_message = "Logs must go to the stack's log group through awslogs."
  }
  assert {
    condition     = aws_cloudwatch_log_group.worker.retention_in_days == 30
    error_message = "The log group must have a retention."
  }
  assert {
    condition = (aws_batch_job_definition.ec2.retry_strategy[0].evaluate_on_exit[0].action == "RETRY"
    && aws_batch_job_definition.ec2.retry_strategy[0].evaluate_on_exit[0].on_status_reason == "Host EC2*")
    error_message = "Spot reclaims (status reason Host EC2*) must be retried first."
  }
  assert {
    condition = ([for rule in aws_batch_job_definition.ec2.retry_strategy[0].evaluate_on_exit : rule.on_exit_code if rule.action == "RETRY" && rule.on_exit_code != null]
    == ["3", "75"])
    error_message = "The worker's exit codes 3 (stuck) and 75 (come back later) must be retried."
  }
  assert {
    condition = (aws_batch_job_definition.ec2.retry_strategy[0].evaluate_on_exit[3].action == "EXIT"
    && aws_batch_job_definition.ec2.retry_strategy[0].evaluate_on_exit[3].on_reason == "*")
    error_message = "A catch-all EXIT must end the rules, or unmatched failures are retried too."
  }
  assert {
    condition     = aws_batch_job_definition.final.retry_strategy == aws_batch_job_definition.ec2.retry_strategy
    error_message = "Every job definition must use the one retry strategy."
  }
  assert {
    condition     = aws_batch_job_definition.ec2.retry_strategy[0].attempts == 3 && aws_batch_job_definition.ec2.timeout[0].attempt_duration_seconds == 21600
    error_message = "Attempts and timeout must follow the variables."
  }
  assert {
    condition     = aws_batch_job_definition.ec2.propagate_tags && aws_batch_job_definition.ec2.platform_capabilities == toset(["EC2"])
    error_message = "Tags must propagate to tasks for cost allocation."
  }
}

run "job_role_policy_comes_from_the_worker_policy_module" {
  module {
    source = "./modules/batch"
  }
  command = apply

  variables {
    allowed_output_buckets = ["batchspot-extra-results"]
  }

  assert {
    condition     = aws_iam_role_policy.job.role == "batchspot-job-20260101000000000000000015" && aws_iam_role_policy.job.policy == module.worker_policy.json
    error_message = "The job role's policy must be modules/worker_policy's document, the one the tests run the worker under."
  }
  assert {
    condition     = strcontains(jsondecode(aws_batch_job_definition.ec2.container_properties).environment[0].value, "batchspot-extra-results")
    error_message = "ALLOWED_OUTPUT_BUCKETS must list the extra buckets."
  }
  assert {
    condition     = one(data.aws_iam_policy_document.assume["ecs-tasks"].statement).principals == toset([{ type = "Service", identifiers = toset(["ecs-tasks.amazonaws.com"]) }])
    error_message = "Only ECS tasks may assume the job role."
  }
}

run "job_role_grants_exactly_the_workers_calls" {
  module {
    source = "./modules/batch"
  }
  command   = plan
  state_key = "offline" # its own empty state: nothing the mock created is refreshed from AWS

  providers = {
    aws = aws.offline
  }

  variables {
    allowed_output_buckets = ["batchspot-extra-results", "batchspot-output-123456789012"]
  }

  assert {
    condition = { for s in jsondecode(aws_iam_role_policy.job.policy).Statement : s.Sid => toset(flatten([s.Action])) } == {
      ConsumeWorkQueue = toset(["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"])
      ReadInput        = toset(["s3:GetObject"])
      WriteResults     = toset(["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"])
    }
    error_message = "The job role must grant exactly the worker's SQS and S3 calls."
  }
  assert {
    condition = { for s in jsondecode(aws_iam_role_policy.job.policy).Statement : s.Sid => toset(flatten([s.Resource])) } == {
      ConsumeWorkQueue = toset([var.queue_arn])
      ReadInput        = toset(["${var.input_bucket_arn}/*"])
      WriteResults = toset([
        "arn:aws:s3:::batchspot-output-123456789012/results/*",
        "arn:aws:s3:::batchspot-extra-results/results/*",
      ])
    }
    error_message = "The job role must name only our queue, the input bucket and the output prefixes (each bucket once)."
  }
  assert {
    condition     = !contains(flatten([for s in jsondecode(aws_iam_role_policy.job.policy).Statement : s.Action]), "s3:ListBucket")
    error_message = "The job role must not list: a prefix-scoped ListBucket would enumerate every result and still not turn a HEAD's 403 into 404."
  }
}

run "fargate_spot_gets_its_own_queue_and_job_definition" {
  module {
    source = "./modules/batch"
  }
  command = apply

  variables {
    enable_fargate_spot = true
    assign_public_ip    = true
  }

  assert {
    condition     = aws_batch_compute_environment.fargate_spot[0].compute_resources[0].type == "FARGATE_SPOT"
    error_message = "The Fargate environment must be FARGATE_SPOT."
  }
  assert {
    condition     = aws_batch_job_queue.fargate_spot[0].compute_environment_order[0].compute_environment == "arn:aws:batch:us-east-1:123456789012:compute-environment/batchspot-fargate-20260101000000000000000022"
    error_message = "The Fargate queue must use only the Fargate environment (queues cannot mix EC2 and Fargate)."
  }
  assert {
    condition     = aws_batch_job_definition.fargate_spot[0].retry_strategy[0].evaluate_on_exit[0].on_status_reason == "Your Spot Task was interrupted*"
    error_message = "Fargate Spot interruptions must be retried."
  }
  assert {
    condition     = aws_batch_job_definition.fargate_spot[0].retry_strategy[0].evaluate_on_exit[1].on_exit_code == "3"
    error_message = "The Fargate job definition must use the one retry strategy."
  }
  assert {
    condition     = jsondecode(aws_batch_job_definition.fargate_spot[0].container_properties).networkConfiguration.assignPublicIp == "ENABLED"
    error_message = "Fargate tasks in public subnets without NAT need a public IP."
  }
  assert {
    condition     = aws_batch_job_definition.fargate_spot[0].platform_capabilities == toset(["FARGATE"])
    error_message = "The Fargate job definition must declare the FARGATE platform."
  }
  assert {
    condition     = jsondecode(aws_batch_job_definition.fargate_spot[0].container_properties).linuxParameters == { initProcessEnabled = true }
    error_message = "Fargate containers must run an init as PID 1 too, and ask for no tmpfs (Fargate has none)."
  }
  assert {
    condition = (jsondecode(aws_batch_job_definition.fargate_spot[0].container_properties).readonlyRootFilesystem == true
      && jsondecode(aws_batch_job_definition.fargate_spot[0].container_properties).volumes == [{ name = "scratch" }]
    && jsondecode(aws_batch_job_definition.fargate_spot[0].container_properties).mountPoints == [{ sourceVolume = "scratch", containerPath = "/tmp", readOnly = false }])
    error_message = "On Fargate the root must be read-only too, with /tmp on a volume of the task's ephemeral storage."
  }
  assert {
    condition = { for r in jsondecode(aws_batch_job_definition.fargate_spot[0].container_properties).resourceRequirements : r.type => r.value } == {
      VCPU = "2", MEMORY = "4096"
    }
    error_message = "Fargate's default memory must be the least it allows for job_vcpus (2 GiB per vCPU)."
  }
}

run "worker_processes_and_memory_can_be_set" {
  module {
    source = "./modules/batch"
  }
  command = apply

  variables {
    job_vcpus        = 4
    worker_processes = 3
    job_memory_mib   = 2048
  }

  assert {
    condition     = { for e in jsondecode(aws_batch_job_definition.ec2.container_properties).environment : e.name => e.value }["WORKER_PROCESSES"] == "3"
    error_message = "worker_processes must set WORKER_PROCESSES."
  }
  assert {
    condition = { for r in jsondecode(aws_batch_job_definition.ec2.container_properties).resourceRequirements : r.type => r.value } == {
      VCPU = "4", MEMORY = "2048"
    }
    error_message = "An explicit job_memory_mib must be used as given."
  }
}

run "best_fit_creates_the_spot_fleet_role" {
  module {
    source = "./modules/batch"
  }
  command = apply

  variables {
    allocation_strategy = "BEST_FIT"
  }

  assert {
    condition     = length(aws_iam_role.spot_fleet) == 1 && aws_batch_compute_environment.spot.compute_resources[0].spot_iam_fleet_role == "arn:aws:iam::123456789012:role/batchspot-spotfleet-20260101000000000000000013"
    error_message = "BEST_FIT needs a Spot Fleet role."
  }
}

run "service_linked_role_option" {
  module {
    source = "./modules/batch"
  }
  command = apply

  variables {
    use_service_linked_role = true
  }

  assert {
    condition     = length(aws_iam_role.batch_service) == 0 && length(aws_iam_role_policy_attachment.batch_service) == 0
    error_message = "With the service-linked role no service role is created."
  }
}

run "rejects_unknown_strategy_and_short_runnable_limit" {
  module {
    source = "./modules/batch"
  }
  command = plan

  variables {
    allocation_strategy      = "LOWEST_PRICE"
    runnable_timeout_minutes = 5
  }

  expect_failures = [var.allocation_strategy, var.runnable_timeout_minutes]
}

run "final_step_runs_worker_final_with_its_own_role_and_the_workers_environment" {
  module {
    source = "./modules/batch"
  }
  command = apply

  assert {
    condition     = jsondecode(aws_batch_job_definition.final.container_properties).command == ["python", "-m", "worker.final"]
    error_message = "The final job definition must run the final step's entrypoint, python -m worker.final."
  }
  assert {
    condition     = jsondecode(aws_batch_job_definition.final.container_properties).jobRoleArn == aws_iam_role.final.arn && aws_iam_role.final.arn != aws_iam_role.job.arn
    error_message = "The final step must run as its own role: it lists the results, which the worker's role may not."
  }
  assert {
    condition = (jsondecode(aws_batch_job_definition.final.container_properties).environment
    == jsondecode(aws_batch_job_definition.ec2.container_properties).environment)
    error_message = "The final step must get the workers' environment (queue, bucket, prefix, CODE_VERSION)."
  }
  assert {
    condition     = contains(jsondecode(aws_batch_job_definition.ec2.container_properties).environment, { name = "CODE_VERSION", value = var.image })
    error_message = "The job definition must set CODE_VERSION from the image, so results are keyed by the code."
  }
  assert {
    condition     = aws_batch_job_definition.final.platform_capabilities == toset(["EC2"]) && output.final_job_definition_name == "batchspot-final"
    error_message = "The final step runs on the same EC2 Spot compute, and its name is an output."
  }
}
