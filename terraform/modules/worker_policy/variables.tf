variable "queue_arn" {
  description = "ARN of the work queue the worker consumes."
  type        = string
}

variable "input_bucket_arn" {
  description = "ARN of the bucket the worker reads source objects from."
  type        = string
}

variable "output_buckets" {
  description = "Names of the buckets results may be written to: the worker's OUTPUT_BUCKET, then its ALLOWED_OUTPUT_BUCKETS. Duplicates are dropped."
  type        = list(string)

  validation {
    condition     = length(var.output_buckets) > 0
    error_message = "At least one output bucket (OUTPUT_BUCKET) is needed."
  }
}

variable "output_prefix" {
  description = "Key prefix of results (the worker's OUTPUT_PREFIX); the worker may write below it only."
  type        = string
}
