# The final step's own permissions (python -m worker.final, after the array job): the policy of
# its Batch job role. A module of its own, as modules/worker_policy is, so that tests render
# exactly this document and run the final step under it on an emulator that enforces IAM.
#
# It lists the results (the worker's role may not) and reads their metadata and the failure
# records the workers left under OUTPUT_PREFIX, writes the manifest and final.json under runs/,
# and reads the counts of the work queue and its dead-letter queue (found by name: GetQueueUrl).

data "aws_partition" "current" {}

locals {
  output_bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${var.output_bucket}"
  runs_arn          = "${local.output_bucket_arn}/runs/*"
  # The queue module names the dead-letter queue after the work queue.
  queue_arns = [var.queue_arn, "${var.queue_arn}-dlq"]
}

data "aws_iam_policy_document" "final" {
  statement {
    sid       = "ListResults"
    actions   = ["s3:ListBucket"]
    resources = [local.output_bucket_arn]
  }

  statement {
    sid       = "ReadResultsAndRecords"
    actions   = ["s3:GetObject"]
    resources = ["${local.output_bucket_arn}/${var.output_prefix}*", local.runs_arn]
  }

  statement {
    sid       = "WriteManifest"
    actions   = ["s3:AbortMultipartUpload", "s3:PutObject"]
    resources = [local.runs_arn]
  }

  statement {
    sid       = "CountQueues"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = local.queue_arns
  }
}
