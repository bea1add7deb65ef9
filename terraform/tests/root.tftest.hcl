# The root module wires the modules together; offline against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["us-east-1a", "us-east-1b", "us-east-1c"] }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_resource "aws_ecr_repository" {
    defaults = {
      arn            = "arn:aws:ecr:us-east-1:123456789012:repository/batchspot"
      repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot"
    }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::batchspot-bucket-123456789012" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/batchspot-role-20260101000000000000000001" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/batch/batchspot" }
  }
  mock_resource "aws_batch_compute_environment" {
    defaults = { arn = "arn:aws:batch:us-east-1:123456789012:compute-environment/batchspot-spot-20260101000000000000000003" }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/batchspot-instance-20260101000000000000000002" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }
}

# The work queue and the DLQ get their own ARNs and URLs, so a swapped output fails.
override_resource {
  target = module.queue.aws_sqs_queue.work
  values = {
    arn = "arn:aws:sqs:us-east-1:123456789012:batchspot"
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot"
  }
}

override_resource {
  target = module.queue.aws_sqs_queue.dlq
  values = {
    arn = "arn:aws:sqs:us-east-1:123456789012:batchspot-dlq"
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot-dlq"
  }
}

run "one_apply_wires_every_output" {
  command = apply

  assert {
    condition     = output.input_bucket == "batchspot-input-123456789012" && output.output_bucket == "batchspot-output-123456789012"
    error_message = "Default bucket names carry the account id."
  }
  assert {
    condition     = output.image == "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot:latest"
    error_message = "The job definition must run this stack's ECR image by default."
  }
  assert {
    condition = alltrue([for o in [output.queue_url, output.dlq_url, output.ecr_repository_url, output.job_queue,
    output.job_definition, output.log_group, output.compute_environment_name] : o != null && o != ""])
    error_message = "Every name the tasks need must be an output."
  }
  assert {
    condition = (output.queue_url == "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot"
      && output.queue_arn == "arn:aws:sqs:us-east-1:123456789012:batchspot"
    && output.dlq_url == "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot-dlq")
    error_message = "queue_url and queue_arn must be the work queue's, dlq_url the DLQ's."
  }
  assert {
    condition     = output.fargate_job_queue == null && output.fargate_job_definition == null
    error_message = "Fargate outputs are null unless enabled."
  }
}

run "image_digest_pins_the_exact_image" {
  command = apply

  variables {
    image_digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  }

  assert {
    condition     = output.image == "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    error_message = "With image_digest the job definition must run <repository>@<digest>, not a tag."
  }
}

run "rejects_bad_worker_settings" {
  command = plan

  variables {
    query_engine   = "athena"
    s3_query_limit = "ten"
    handler        = "not a callable"
    image_digest   = "latest"
  }

  expect_failures = [var.query_engine, var.s3_query_limit, var.handler, var.image_digest]
}
