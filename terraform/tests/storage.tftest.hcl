# Plan-level behaviour of modules/storage, offline against a mocked AWS provider.

mock_provider "aws" {
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::batchspot-bucket-123456789012" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  input_bucket_name  = "batchspot-input-123456789012"
  output_bucket_name = "batchspot-output-123456789012"
}

run "buckets_are_private_encrypted_and_keep_results_by_default" {
  module {
    source = "./modules/storage"
  }
  command = apply

  assert {
    condition     = aws_s3_bucket.this["input"].bucket == var.input_bucket_name && aws_s3_bucket.this["output"].bucket == var.output_bucket_name
    error_message = "Both buckets must be created with the given names."
  }
  assert {
    condition = alltrue([for b in aws_s3_bucket_public_access_block.this :
    b.block_public_acls && b.block_public_policy && b.ignore_public_acls && b.restrict_public_buckets])
    error_message = "All four public access blocks must be on for both buckets."
  }
  assert {
    condition = alltrue([for c in aws_s3_bucket_server_side_encryption_configuration.this :
    one(one(c.rule).apply_server_side_encryption_by_default).sse_algorithm == "AES256"])
    error_message = "Both buckets must be encrypted by default."
  }
  assert {
    condition     = alltrue([for o in aws_s3_bucket_ownership_controls.this : one(o.rule).object_ownership == "BucketOwnerEnforced"])
    error_message = "ACLs must be disabled (BucketOwnerEnforced)."
  }
  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.this["output"].rule) == 1
    error_message = "Results must not expire unless output_expiration_days is set."
  }
  assert {
    condition     = !aws_s3_bucket.this["input"].force_destroy && !aws_s3_bucket.this["output"].force_destroy
    error_message = "Buckets holding data must not be force-destroyed by default."
  }
  assert {
    condition     = one(data.aws_iam_policy_document.tls_only["output"].statement).effect == "Deny"
    error_message = "Requests without TLS must be denied."
  }
}

run "expires_results_when_asked" {
  module {
    source = "./modules/storage"
  }
  command = apply

  variables {
    output_expiration_days = 30
  }

  assert {
    condition     = one([for r in aws_s3_bucket_lifecycle_configuration.this["output"].rule : one(r.expiration).days if r.id == "expire-results"]) == 30
    error_message = "Results must expire after output_expiration_days."
  }
  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.this["input"].rule) == 1
    error_message = "Input objects must never expire."
  }
}

run "rejects_negative_expiry" {
  module {
    source = "./modules/storage"
  }
  command = plan

  variables {
    output_expiration_days = -1
  }

  expect_failures = [var.output_expiration_days]
}
