variable "input_bucket_name" {
  description = "Name of the bucket holding the source objects."
  type        = string
}

variable "output_bucket_name" {
  description = "Name of the bucket the workers write JSON results to."
  type        = string
}

variable "output_expiration_days" {
  description = "Delete results this many days after they are written; 0 keeps them forever."
  type        = number
  default     = 0

  validation {
    condition     = var.output_expiration_days >= 0 && floor(var.output_expiration_days) == var.output_expiration_days
    error_message = "output_expiration_days must be a whole number of days, 0 to keep results."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Delete overwritten or deleted object versions after this many days."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete buckets that still hold objects (for throwaway stacks)."
  type        = bool
  default     = false
}

variable "deny_insecure_transport" {
  description = "Deny every S3 request made without TLS (bucket policy). Off only for local emulators reached over plain HTTP."
  type        = bool
  default     = true
}

variable "input_inventory_frequency" {
  description = "Daily or Weekly: deliver an S3 Inventory of the input bucket (Parquet, with ETags) to the output bucket under inventory/, for `invoke seed --inventory`. Empty: none."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "Daily", "Weekly"], var.input_inventory_frequency)
    error_message = "input_inventory_frequency must be Daily, Weekly or empty (no inventory)."
  }
}
