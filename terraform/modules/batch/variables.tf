variable "name" {
  description = "Prefix for every resource this module creates; also the job queue and job definition name."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets the compute environments launch into."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the Batch instances and Fargate tasks; they need HTTPS egress."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give Fargate tasks a public address (needed in public subnets without a NAT gateway)."
  type        = bool
  default     = false
}

variable "image" {
  description = "Worker image, e.g. <account>.dkr.ecr.<region>.amazonaws.com/batchspot:latest."
  type        = string
}

variable "ecr_repository_arn" {
  description = "Repository the image is pulled from; scopes the execution role's pull permission. Null for images outside ECR."
  type        = string
  default     = null
}

variable "queue_arn" {
  description = "ARN of the work queue the job role may consume."
  type        = string
}

variable "queue_url" {
  description = "URL of the work queue, passed to the worker as SQS_QUEUE_URL."
  type        = string
}

variable "input_bucket_arn" {
  description = "ARN of the bucket the job role may read source objects from."
  type        = string
}

variable "output_bucket" {
  description = "Name of the bucket results are written to (the worker's OUTPUT_BUCKET)."
  type        = string
}

variable "output_prefix" {
  description = "Key prefix of results (the worker's OUTPUT_PREFIX); the job role may write below it only."
  type        = string
  default     = "results/"
}

variable "allowed_output_buckets" {
  description = "Other buckets a message may direct its result to (the worker's ALLOWED_OUTPUT_BUCKETS); the job role may write below output_prefix there too."
  type        = list(string)
  default     = []
}

variable "worker_environment" {
  description = "Further worker settings (S3_QUERY_LIMIT, HANDLER, ...). Empty values are left out: Batch drops them, which would show as a diff on every plan."
  type        = map(string)
  default     = {}
}

variable "instance_types" {
  description = "EC2 instance types or families for the Spot compute environment; \"optimal\" lets Batch pick from the C, M and R families."
  type        = list(string)
  default     = ["optimal"]
}

variable "allocation_strategy" {
  description = "Spot allocation strategy. BEST_FIT needs a Spot Fleet role, which is then created."
  type        = string
  default     = "SPOT_PRICE_CAPACITY_OPTIMIZED"

  validation {
    condition     = contains(["SPOT_PRICE_CAPACITY_OPTIMIZED", "SPOT_CAPACITY_OPTIMIZED", "BEST_FIT"], var.allocation_strategy)
    error_message = "allocation_strategy must be SPOT_PRICE_CAPACITY_OPTIMIZED, SPOT_CAPACITY_OPTIMIZED or BEST_FIT."
  }
}

variable "bid_percentage" {
  description = "Highest Spot price paid, as a percentage of the On-Demand price."
  type        = number
  default     = 100

  validation {
    condition     = var.bid_percentage >= 1 && var.bid_percentage <= 100
    error_message = "bid_percentage must be between 1 and 100."
  }
}

variable "max_vcpus" {
  description = "Upper bound of the Spot compute environment; it scales from 0 and back to 0."
  type        = number
  default     = 128

  validation {
    condition     = var.max_vcpus >= 1
    error_message = "max_vcpus must be at least 1."
  }
}

variable "root_volume_size_gib" {
  description = "Encrypted root volume of each instance (images and scratch space)."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size_gib >= 30
    error_message = "root_volume_size_gib must be at least 30, the ECS-optimized AMI's snapshot size."
  }
}

variable "enable_fargate_spot" {
  description = "Also create a FARGATE_SPOT compute environment with its own job queue and job definition."
  type        = bool
  default     = false
}

variable "fargate_max_vcpus" {
  description = "Upper bound of the Fargate Spot compute environment."
  type        = number
  default     = 64

  validation {
    condition     = var.fargate_max_vcpus >= 1
    error_message = "fargate_max_vcpus must be at least 1."
  }
}

variable "job_vcpus" {
  description = "vCPUs per worker container. On Fargate only 0.25, 0.5, 1, 2, 4, 8 and 16 exist."
  type        = number
  default     = 2

  validation {
    condition     = var.job_vcpus > 0
    error_message = "job_vcpus must be positive."
  }
}

variable "job_memory_mib" {
  description = "Memory per worker container in MiB; null sizes it from the worker's measured budget (320 MiB per worker process + 256 MiB + scratch_mib; on Fargate at least 2 GiB per vCPU). Asking for more than any allowed instance offers leaves jobs in RUNNABLE."
  type        = number
  default     = null

  validation {
    condition     = var.job_memory_mib == null ? true : var.job_memory_mib >= 512
    error_message = "job_memory_mib must be at least 512."
  }
}

variable "scratch_mib" {
  description = "Size in MiB of the tmpfs at /tmp (the root filesystem is read-only): a command's output is spooled there until it is stored, so it must hold the largest outputs of WORKER_PROCESSES x WORKER_CONCURRENCY items at once. It is charged to the container's memory (EC2; Fargate uses its ephemeral storage)."
  type        = number
  default     = 256

  validation {
    condition     = var.scratch_mib >= 16
    error_message = "scratch_mib must be at least 16."
  }
}

variable "worker_processes" {
  description = "Worker processes per container (WORKER_PROCESSES); null runs one per whole job vCPU."
  type        = number
  default     = null

  validation {
    condition     = var.worker_processes == null ? true : var.worker_processes >= 1 && floor(var.worker_processes) == var.worker_processes
    error_message = "worker_processes must be a whole number of at least 1."
  }
}

variable "job_attempts" {
  description = "Attempts per array child; a Spot reclaim and the worker's exits 3 and 75 are retried."
  type        = number
  default     = 3

  validation {
    condition     = var.job_attempts >= 1 && var.job_attempts <= 10
    error_message = "job_attempts must be between 1 and 10 (the Batch limit)."
  }
}

variable "job_timeout_seconds" {
  description = "Batch stops an attempt that runs longer than this."
  type        = number
  default     = 21600

  validation {
    condition     = var.job_timeout_seconds >= 60
    error_message = "job_timeout_seconds must be at least 60 (the Batch minimum)."
  }
}

variable "runnable_timeout_minutes" {
  description = "Cancel a job that waits in RUNNABLE this long because no capacity comes or no environment can ever run it."
  type        = number
  default     = 30

  validation {
    condition     = var.runnable_timeout_minutes >= 10 && var.runnable_timeout_minutes <= 1440
    error_message = "runnable_timeout_minutes must be between 10 and 1440 (Batch accepts 600 to 86400 seconds)."
  }
}

variable "log_retention_days" {
  description = "Retention of the worker log group."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts, e.g. 7, 14, 30, 90, 365."
  }
}

variable "use_service_linked_role" {
  description = "Let Batch use its service-linked role instead of a service role created here."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the EC2 instances Batch launches (cost allocation); other resources get them from the provider's default_tags."
  type        = map(string)
  default     = {}
}
