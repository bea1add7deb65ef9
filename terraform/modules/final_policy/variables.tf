variable "queue_arn" {
  description = "ARN of the work queue; its dead-letter queue is this ARN with -dlq (modules/queue)."
  type        = string
}

variable "output_bucket" {
  description = "Name of the bucket holding the results (OUTPUT_BUCKET) and the run manifests."
  type        = string
}

variable "output_prefix" {
  description = "Key prefix of results (OUTPUT_PREFIX); the workers' failure records lie below it too."
  type        = string
}
