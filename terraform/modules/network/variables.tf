variable "name" {
  description = "Prefix for every resource this module creates."
  type        = string
}

variable "subnet_ids" {
  description = "Existing subnets for the Batch instances. Empty: create a small VPC with public subnets."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Existing security groups for the Batch instances. Empty: create one that allows HTTPS egress only."
  type        = list(string)
  default     = []
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC created when no subnets are given."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block such as 10.42.0.0/16."
  }
}

variable "az_count" {
  description = "Number of availability zones (one public subnet each) for the created VPC; more zones mean more Spot pools."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 6
    error_message = "az_count must be between 1 and 6."
  }
}
