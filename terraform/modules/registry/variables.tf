variable "name" {
  description = "Name of the ECR repository."
  type        = string
}

variable "keep_images" {
  description = "Number of most recent images kept; older ones are expired by the lifecycle policy."
  type        = number
  default     = 10

  validation {
    condition     = var.keep_images >= 1 && var.keep_images <= 1000
    error_message = "keep_images must be between 1 and 1000."
  }
}

variable "force_delete" {
  description = "Let terraform destroy delete the repository while it still holds images."
  type        = bool
  default     = false
}
