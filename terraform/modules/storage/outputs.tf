output "input_bucket" {
  description = "Name of the input bucket."
  value       = aws_s3_bucket.this["input"].bucket
}

output "input_bucket_arn" {
  description = "ARN of the input bucket."
  value       = aws_s3_bucket.this["input"].arn
}

output "output_bucket" {
  description = "Name of the output bucket."
  value       = aws_s3_bucket.this["output"].bucket
}

output "output_bucket_arn" {
  description = "ARN of the output bucket."
  value       = aws_s3_bucket.this["output"].arn
}

output "inventory_manifests" {
  description = "Where the input bucket's inventory manifests are delivered (a dated folder each, holding manifest.json), or null without one."
  value       = local.inventory_enabled ? "s3://${aws_s3_bucket.this["output"].bucket}/${local.inventory_prefix}/${aws_s3_bucket.this["input"].bucket}/batchspot/" : null
}
