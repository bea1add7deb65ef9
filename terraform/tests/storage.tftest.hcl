# Plan-level behaviour of modules/storage, offline against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
}

# The real provider, offline: it renders the bucket policy documents locally, so the TLS policy
# is checked as AWS will receive it. Only the buckets are overridden, during plan as well, so
# their ARNs are known when the documents are rendered; each bucket gets its own (generated) ARN.
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

run "every_bucket_denies_requests_without_tls_and_only_s3_delivers_the_inventory" {
  module {
    source = "./modules/storage"
  }
  command   = apply
  state_key = "offline" # its own state: nothing the mock created is refreshed from AWS

  variables {
    input_inventory_frequency = "Weekly"
  }

  # The real provider renders the policy documents locally; every resource that would call AWS
  # is overridden. Each bucket gets its own generated ARN and id, so a policy naming the wrong
  # bucket, or attached to the wrong one, fails.
  providers = {
    aws = aws.offline
  }

  override_resource {
    target = aws_s3_bucket.this
  }
  override_resource {
    target = aws_s3_bucket_public_access_block.this
  }
  override_resource {
    target = aws_s3_bucket_ownership_controls.this
  }
  override_resource {
    target = aws_s3_bucket_server_side_encryption_configuration.this
  }
  override_resource {
    target = aws_s3_bucket_versioning.this
  }
  override_resource {
    target = aws_s3_bucket_lifecycle_configuration.this
  }
  override_resource {
    target = aws_s3_bucket_policy.this
  }
  override_resource {
    target = aws_s3_bucket_inventory.input
  }
  override_data {
    target = data.aws_caller_identity.inventory
    values = { account_id = "123456789012" }
  }

  assert {
    condition = alltrue([for key, bucket in aws_s3_bucket.this :
      jsondecode(aws_s3_bucket_policy.this[key].policy).Version == "2012-10-17"
      && length(jsondecode(aws_s3_bucket_policy.this[key].policy).Statement) == (key == "output" ? 2 : 1)
    ])
    error_message = "The input bucket's policy must hold one statement, the output bucket's two (TLS and the inventory's delivery)."
  }
  assert {
    condition = alltrue([for key, bucket in aws_s3_bucket.this :
      merge(one([for st in jsondecode(aws_s3_bucket_policy.this[key].policy).Statement : st if st.Sid == "DenyInsecureTransport"]), {
        Resource = toset(one([for st in jsondecode(aws_s3_bucket_policy.this[key].policy).Statement : st if st.Sid == "DenyInsecureTransport"]).Resource)
        }) == {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = toset([bucket.arn, "${bucket.arn}/*"])
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      }
    ])
    error_message = "Each bucket's policy must deny every S3 action, by anyone, on that bucket and its objects when aws:SecureTransport is false."
  }
  assert {
    condition     = alltrue([for key, bucket in aws_s3_bucket.this : aws_s3_bucket_policy.this[key].bucket == bucket.id])
    error_message = "Each TLS policy must be attached to its own bucket."
  }
  assert {
    condition     = keys(aws_s3_bucket_policy.this) == ["input", "output"]
    error_message = "Both buckets must carry the TLS policy."
  }
  assert {
    condition = [
      for statement in jsondecode(aws_s3_bucket_policy.this["output"].policy).Statement : statement
      if statement.Sid == "InventoryDelivery"
      ] == [{
        Sid       = "InventoryDelivery"
        Effect    = "Allow"
        Principal = { Service = "s3.amazonaws.com" }
        Action    = "s3:PutObject"
        Resource  = "${aws_s3_bucket.this["output"].arn}/inventory/*"
        Condition = {
          ArnLike      = { "aws:SourceArn" = aws_s3_bucket.this["input"].arn }
          StringEquals = { "aws:SourceAccount" = "123456789012" }
        }
    }]
    error_message = "S3 may put only the input bucket's inventory, of this account, only under inventory/ in the output bucket."
  }
}

run "tls_policy_can_be_switched_off_for_plain_http_emulators" {
  module {
    source = "./modules/storage"
  }
  command = apply

  variables {
    deny_insecure_transport = false
  }

  assert {
    condition     = length(aws_s3_bucket_policy.this) == 0 && length(data.aws_iam_policy_document.bucket_policy) == 0
    error_message = "deny_insecure_transport = false must attach no bucket policy."
  }
}

run "an_inventory_of_the_input_bucket_is_delivered_to_the_output_bucket_when_asked" {
  module {
    source = "./modules/storage"
  }
  command = apply

  variables {
    input_inventory_frequency = "Daily"
  }

  assert {
    condition = (
      one(aws_s3_bucket_inventory.input).bucket == aws_s3_bucket.this["input"].id
      && endswith(one(one(one(aws_s3_bucket_inventory.input).destination).bucket).bucket_arn, ":s3:::${var.output_bucket_name}")
      && one(one(one(aws_s3_bucket_inventory.input).destination).bucket).prefix == "inventory"
      && one(one(aws_s3_bucket_inventory.input).schedule).frequency == "Daily"
      && one(aws_s3_bucket_inventory.input).included_object_versions == "Current"
    )
    error_message = "The input bucket's daily inventory of current objects must go to the output bucket under inventory/."
  }
  assert {
    condition     = contains(one(aws_s3_bucket_inventory.input).optional_fields, "ETag")
    error_message = "`invoke seed --inventory` refuses an inventory without ETags."
  }
  assert {
    condition     = output.inventory_manifests == "s3://${var.output_bucket_name}/inventory/${var.input_bucket_name}/batchspot/"
    error_message = "inventory_manifests must name where S3 delivers the manifests: <prefix>/<source bucket>/<inventory name>/."
  }
}

run "no_inventory_by_default" {
  module {
    source = "./modules/storage"
  }
  command = plan

  assert {
    condition     = length(aws_s3_bucket_inventory.input) == 0 && output.inventory_manifests == null
    error_message = "No inventory unless input_inventory_frequency is set."
  }
}

run "inventory_frequency_is_daily_or_weekly" {
  module {
    source = "./modules/storage"
  }
  command = plan

  variables {
    input_inventory_frequency = "Hourly"
  }
  expect_failures = [var.input_inventory_frequency]
}
