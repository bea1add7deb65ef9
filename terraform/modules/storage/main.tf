# Two private buckets: the input objects and the results. SSE-S3 encryption, all public access
# blocked, ACLs disabled, TLS required, versioning so a bad run can be undone.

locals {
  buckets = {
    input  = var.input_bucket_name
    output = var.output_bucket_name
  }
}

resource "aws_s3_bucket" "this" {
  for_each = local.buckets

  bucket        = each.value
  force_destroy = var.force_destroy

  tags = { Purpose = each.key }

  #checkov:skip=CKV_AWS_144:Inputs and results are reproducible from their source; cross-region replication doubles storage cost.
  #checkov:skip=CKV_AWS_18:Access logging writes one object per request batch; CloudTrail data events are the opt-in audit path.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; work items come from the SQS queue that `invoke seed` fills.
  #checkov:skip=CKV_AWS_145:SSE-S3 instead of SSE-KMS: KMS bills every GetObject/PutObject, which dominates on millions of small objects.
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = aws_s3_bucket.this

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = aws_s3_bucket.this

  bucket = each.value.id

  rule {
    id     = "housekeeping"
    status = "Enabled"
    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  dynamic "rule" {
    for_each = each.key == "output" && var.output_expiration_days > 0 ? [var.output_expiration_days] : []
    content {
      id     = "expire-results"
      status = "Enabled"
      filter {}

      expiration {
        days = rule.value
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "tls_only" {
  for_each = var.deny_insecure_transport ? aws_s3_bucket.this : {}

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  for_each = var.deny_insecure_transport ? aws_s3_bucket.this : {}

  bucket = each.value.id
  policy = data.aws_iam_policy_document.tls_only[each.key].json

  # A bucket policy applied before the public access block can be rejected as public.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
