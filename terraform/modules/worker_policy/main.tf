# The worker's own permissions: the policy of the Batch job role. It is a module of its own so
# that tests can render exactly this document (terraform plan + show -json) and run the worker
# under it on an emulator that enforces IAM.
#
# Exactly what the worker calls. DeleteMessageBatch and ChangeMessageVisibilityBatch are
# authorised by DeleteMessage and ChangeMessageVisibility; HeadObject and S3 Select by GetObject.
#
# No s3:ListBucket, on purpose: the worker never lists. Without it S3 answers a HEAD of a missing
# result key with 403 instead of 404; the worker takes that as "unknown" and goes on, as
# If-None-Match: * still refuses a second write. A ListBucket scoped to the output prefix would
# not help: it would let the role enumerate every result, and its s3:prefix condition key exists
# only for list requests, so that HEAD would still answer 403.

data "aws_partition" "current" {}

locals {
  output_bucket_arns = [
    for bucket in distinct(var.output_buckets) : "arn:${data.aws_partition.current.partition}:s3:::${bucket}"
  ]
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "ConsumeWorkQueue"
    actions   = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    resources = [var.queue_arn]
  }

  statement {
    sid       = "ReadInput"
    actions   = ["s3:GetObject"]
    resources = ["${var.input_bucket_arn}/*"]
  }

  statement {
    sid       = "WriteResults"
    actions   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    resources = [for arn in local.output_bucket_arns : "${arn}/${var.output_prefix}*"]
  }
}
