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

locals {
  # Each bucket's policy: TLS only (unless off for an emulator), and on the output bucket the
  # inventory's delivery when there is one. A bucket has one policy, so both share it.
  inventory_enabled = var.input_inventory_frequency != ""
  inventory_prefix  = "inventory"
  policy_buckets = {
    for key, bucket in aws_s3_bucket.this : key => bucket
    if var.deny_insecure_transport || (key == "output" && local.inventory_enabled)
  }
}

data "aws_partition" "current" {}

data "aws_caller_identity" "inventory" {
  count = local.inventory_enabled ? 1 : 0
}

data "aws_iam_policy_document" "bucket_policy" {
  for_each = local.policy_buckets

  # S3 User Guide, "Configuring Amazon S3 Inventory": the destination bucket's policy lets
  # s3.amazonaws.com put the inventory, for this source bucket and account only.
  dynamic "statement" {
    for_each = each.key == "output" && local.inventory_enabled ? [1] : []
    content {
      sid       = "InventoryDelivery"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["${each.value.arn}/${local.inventory_prefix}/*"]
      principals {
        type        = "Service"
        identifiers = ["s3.amazonaws.com"]
      }
      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = [aws_s3_bucket.this["input"].arn]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [one(data.aws_caller_identity.inventory).account_id]
      }
    }
  }

  dynamic "statement" {
    for_each = var.deny_insecure_transport ? [1] : []
    content {
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
}

resource "aws_s3_bucket_policy" "this" {
  for_each = local.policy_buckets

  bucket = each.value.id
  policy = data.aws_iam_policy_document.bucket_policy[each.key].json

  # A bucket policy applied before the public access block can be rejected as public.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

# Optional: a daily or weekly S3 Inventory of the input bucket, delivered to the output bucket
# under inventory/, for `invoke seed --inventory` (the way to seed millions of objects).
resource "aws_s3_bucket_inventory" "input" {
  count = local.inventory_enabled ? 1 : 0

  bucket                   = aws_s3_bucket.this["input"].id
  name                     = "batchspot"
  included_object_versions = "Current"
  optional_fields          = ["Size", "ETag"]

  schedule {
    frequency = var.input_inventory_frequency
  }

  destination {
    bucket {
      format = "Parquet"
      # The ARN from the name, as S3 forms it: known at plan, so the provider can validate it.
      bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${aws_s3_bucket.this["output"].bucket}"
      prefix     = local.inventory_prefix
      encryption {
        sse_s3 {}
      }
    }
  }

  depends_on = [aws_s3_bucket_policy.this]
}

moved {
  from = aws_s3_bucket_policy.tls_only
  to   = aws_s3_bucket_policy.this
}
