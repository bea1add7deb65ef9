# modules/worker_policy, rendered by the real AWS provider offline: aws_iam_policy_document and
# aws_partition are computed locally, so this checks the very JSON the job role receives.

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
}

variables {
  queue_arn        = "arn:aws:sqs:us-east-1:123456789012:batchspot"
  input_bucket_arn = "arn:aws:s3:::batchspot-input-123456789012"
  output_buckets   = ["batchspot-output-123456789012", "batchspot-extra-results", "batchspot-output-123456789012"]
  output_prefix    = "results/"
}

run "grants_exactly_the_workers_calls" {
  module {
    source = "./modules/worker_policy"
  }
  command = plan

  assert {
    condition = { for s in jsondecode(output.json).Statement : s.Sid => toset(flatten([s.Action])) } == {
      ConsumeWorkQueue = toset(["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"])
      ReadInput        = toset(["s3:GetObject"])
      WriteResults     = toset(["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"])
    }
    error_message = "The policy must grant exactly the worker's SQS and S3 calls."
  }
  assert {
    condition = { for s in jsondecode(output.json).Statement : s.Sid => toset(flatten([s.Resource])) } == {
      ConsumeWorkQueue = toset([var.queue_arn])
      ReadInput        = toset(["${var.input_bucket_arn}/*"])
      WriteResults = toset([
        "arn:aws:s3:::batchspot-output-123456789012/results/*",
        "arn:aws:s3:::batchspot-extra-results/results/*",
      ])
    }
    error_message = "The policy must name only the queue, the input bucket and the output prefixes (each bucket once)."
  }
  assert {
    condition     = alltrue([for s in jsondecode(output.json).Statement : s.Effect == "Allow" && !contains(keys(s), "Condition")])
    error_message = "Every statement must be a plain Allow."
  }
  assert {
    condition     = !contains(flatten([for s in jsondecode(output.json).Statement : s.Action]), "s3:ListBucket")
    error_message = "No s3:ListBucket: the worker never lists, and a prefix-scoped one would enumerate every result without turning a HEAD's 403 into 404."
  }
  assert {
    condition     = alltrue([for a in flatten([for s in jsondecode(output.json).Statement : s.Action]) : !strcontains(a, "*")])
    error_message = "No wildcard actions."
  }
}

run "writes_only_below_the_output_prefix" {
  module {
    source = "./modules/worker_policy"
  }
  command = plan

  variables {
    output_buckets = ["batchspot-output-123456789012"]
    output_prefix  = "runs/2026/"
  }

  assert {
    condition     = one([for s in jsondecode(output.json).Statement : s.Resource if s.Sid == "WriteResults"]) == "arn:aws:s3:::batchspot-output-123456789012/runs/2026/*"
    error_message = "Results may be written below output_prefix only."
  }
}

run "needs_an_output_bucket" {
  module {
    source = "./modules/worker_policy"
  }
  command = plan

  variables {
    output_buckets = []
  }

  expect_failures = [var.output_buckets]
}
