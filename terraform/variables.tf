# --- stack ------------------------------------------------------------------------------------

variable "region" {
  description = "AWS region of the stack."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-\\d$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "name" {
  description = "Prefix of every resource name; lets several stacks share an account."
  type        = string
  default     = "batchspot"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2 to 21 characters of lowercase letters, digits and hyphens, starting with a letter (it becomes part of bucket names)."
  }
}

variable "tags" {
  description = "Extra tags on every resource, propagated to Batch tasks and instances for cost allocation."
  type        = map(string)
  default     = {}
}

variable "force_destroy" {
  description = "Let terraform destroy delete non-empty buckets and the image repository (throwaway stacks only)."
  type        = bool
  default     = false
}

variable "deny_insecure_transport" {
  description = "Deny S3 requests made without TLS. Keep true on AWS; `invoke local` turns it off because the emulator speaks plain HTTP."
  type        = bool
  default     = true
}

# --- network ----------------------------------------------------------------------------------

variable "subnet_ids" {
  description = "Existing subnets for the workers. Empty: create a VPC with public subnets and no NAT gateway."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Existing security groups for the workers (they need HTTPS egress). Empty: create one."
  type        = list(string)
  default     = []
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC created when subnet_ids is empty."
  type        = string
  default     = "10.42.0.0/16"
}

variable "az_count" {
  description = "Availability zones (one public subnet each) of the created VPC; more zones, more Spot pools."
  type        = number
  default     = 3
}

# --- storage ----------------------------------------------------------------------------------

variable "input_bucket_name" {
  description = "Bucket of the source objects. Null: <name>-input-<account id>."
  type        = string
  default     = null
}

variable "output_bucket_name" {
  description = "Bucket of the results. Null: <name>-output-<account id>."
  type        = string
  default     = null
}

variable "input_inventory_frequency" {
  description = "Daily or Weekly: deliver an S3 Inventory of the input bucket to the output bucket under inventory/, for `invoke seed --inventory` (the way to seed millions of objects). Empty: none."
  type        = string
  default     = ""
}

variable "output_expiration_days" {
  description = "Expire results this many days after they are written; 0 keeps them."
  type        = number
  default     = 0
}

# --- queue ------------------------------------------------------------------------------------

variable "visibility_timeout_seconds" {
  description = "Work queue visibility timeout; the worker extends it while an item runs, so this bounds how soon a crashed worker's item is retried."
  type        = number
  default     = 300
}

variable "max_receive_count" {
  description = "Deliveries of a work item before it moves to the dead-letter queue. Every message a stopped worker gives back (it holds at most 2 x worker_concurrency) counts as one, so the default lets a healthy item survive 5 stops; permanent failures skip the retry delay."
  type        = number
  default     = 6
}

variable "message_retention_seconds" {
  description = "How long a work item may wait on the queue (default 4 days)."
  type        = number
  default     = 345600
}

variable "dlq_alarm_actions" {
  description = "ARNs (e.g. SNS topics) notified when the dead-letter queue is not empty or the item failure rate passes failure_rate_alarm_threshold."
  type        = list(string)
  default     = []
}

variable "failure_rate_alarm_threshold" {
  description = "Share of the items attempted in 5 minutes that may fail before the failure-rate alarm fires (0.05 = 5 %)."
  type        = number
  default     = 0.05
}

# --- registry and image -----------------------------------------------------------------------

variable "keep_images" {
  description = "Images kept in ECR; older ones expire."
  type        = number
  default     = 10
}

variable "image_tag" {
  description = "Tag of the worker image in this stack's ECR repository (tags are immutable; `invoke push` pushes the git revision). Until a push, the default only names a placeholder."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid Docker tag."
  }
}

variable "image_digest" {
  description = "Digest (sha256:...) of the worker image in this stack's ECR repository, as `invoke push` prints it; runs that exact image instead of image_tag."
  type        = string
  default     = null

  validation {
    condition     = var.image_digest == null || can(regex("^sha256:[0-9a-f]{64}$", var.image_digest))
    error_message = "image_digest must be sha256: followed by 64 hex digits, as `invoke push` prints it."
  }
}

variable "image" {
  description = "Full image reference to run instead of <ECR repository>:<image_tag> (e.g. a public image)."
  type        = string
  default     = null
}

# --- batch compute ----------------------------------------------------------------------------

variable "instance_types" {
  description = "Instance types or families for Spot; \"optimal\" picks from C, M and R."
  type        = list(string)
  default     = ["optimal"]

  validation {
    condition     = length(var.instance_types) > 0
    error_message = "instance_types needs at least one type or family."
  }
}

variable "allocation_strategy" {
  description = "Spot allocation strategy (SPOT_PRICE_CAPACITY_OPTIMIZED, SPOT_CAPACITY_OPTIMIZED or BEST_FIT). Changing it replaces the compute environment."
  type        = string
  default     = "SPOT_PRICE_CAPACITY_OPTIMIZED"
}

variable "bid_percentage" {
  description = "Highest Spot price paid, as a percentage of On-Demand."
  type        = number
  default     = 100
}

variable "max_vcpus" {
  description = "Most vCPUs the Spot compute environment runs at once (it starts and ends at 0)."
  type        = number
  default     = 128
}

variable "enable_fargate_spot" {
  description = "Also create a Fargate Spot compute environment, job queue and job definition."
  type        = bool
  default     = false
}

variable "fargate_max_vcpus" {
  description = "Most vCPUs the Fargate Spot compute environment runs at once."
  type        = number
  default     = 64
}

variable "use_service_linked_role" {
  description = "Use Batch's service-linked role instead of creating a service role."
  type        = bool
  default     = false
}

# --- job definition ---------------------------------------------------------------------------

variable "job_vcpus" {
  description = "vCPUs per worker container."
  type        = number
  default     = 2
}

variable "job_memory_mib" {
  description = "Memory per worker container in MiB; null sizes it from the worker's measured peak (320 MiB per worker process + 256 MiB + scratch_mib). More than any allowed instance offers leaves jobs RUNNABLE."
  type        = number
  default     = null
}

variable "scratch_mib" {
  description = "Size in MiB of the worker's tmpfs /tmp (its root filesystem is read-only): a command's output is spooled there until stored; charged to the container's memory."
  type        = number
  default     = 256
}

variable "worker_processes" {
  description = "Worker processes per container (WORKER_PROCESSES); null runs one per whole job vCPU."
  type        = number
  default     = null
}

variable "job_attempts" {
  description = "Attempts per array child; a Spot reclaim and the worker's exits 3 and 75 are retried."
  type        = number
  default     = 3
}

variable "job_timeout_seconds" {
  description = "Batch stops an attempt running longer than this."
  type        = number
  default     = 21600
}

variable "runnable_timeout_minutes" {
  description = "Cancel jobs stuck in RUNNABLE (no Spot capacity, impossible resource requests) after this many minutes."
  type        = number
  default     = 30
}

variable "log_retention_days" {
  description = "Retention of the worker log group, in days."
  type        = number
  default     = 30
}

# --- worker settings (environment of the job definition) ----------------------------------------

variable "output_prefix" {
  description = "OUTPUT_PREFIX: key prefix of results; the job role may write below it only."
  type        = string
  default     = "results/"

  validation {
    condition     = !startswith(var.output_prefix, "/")
    error_message = "output_prefix is an S3 key prefix and must not start with /."
  }
}

variable "allowed_output_buckets" {
  description = "ALLOWED_OUTPUT_BUCKETS: other buckets a message may send its result to (the job role may write there too)."
  type        = list(string)
  default     = []
}

variable "s3_query_limit" {
  description = "S3_QUERY_LIMIT: rows read per object by the default query; empty for no limit."
  type        = string
  default     = "10000"

  validation {
    condition     = can(regex("^(\\s*(LIMIT\\s+)?[1-9][0-9]*\\s*)?$", var.s3_query_limit))
    error_message = "s3_query_limit must be empty or a positive number of rows such as 10000."
  }
}

variable "query_engine" {
  description = "QUERY_ENGINE: auto (S3 Select, streaming fallback), s3select or local."
  type        = string
  default     = "auto"

  validation {
    condition     = contains(["auto", "s3select", "local"], var.query_engine)
    error_message = "query_engine must be auto, s3select or local."
  }
}

variable "rows_format" {
  description = "ROWS_FORMAT: how rows are handed to the custom code, json or csv."
  type        = string
  default     = "json"

  validation {
    condition     = contains(["json", "csv"], var.rows_format)
    error_message = "rows_format must be json or csv."
  }
}

variable "handler" {
  description = "HANDLER: the custom code as a Python callable package.module:function; empty with handler_command."
  type        = string
  default     = ""

  validation {
    condition     = var.handler == "" || can(regex("^([A-Za-z_][\\w.]*:[A-Za-z_]\\w*|rows-to-json)$", var.handler))
    error_message = "handler must look like package.module:function."
  }
}

variable "handler_command" {
  description = "HANDLER_COMMAND: the custom code as an executable command line (input on stdin, JSON on stdout)."
  type        = string
  default     = ""
}

variable "handler_timeout_seconds" {
  description = "HANDLER_TIMEOUT: seconds one item's custom code may run."
  type        = number
  default     = 900

  validation {
    condition     = var.handler_timeout_seconds > 0
    error_message = "handler_timeout_seconds must be positive."
  }
}

variable "item_timeout_seconds" {
  description = "ITEM_TIMEOUT_SECONDS: one deadline for an item's query, custom code and store; the heartbeat never holds a message past it. Null: twice handler_timeout_seconds."
  type        = number
  default     = null

  validation {
    condition     = var.item_timeout_seconds == null || try(var.item_timeout_seconds >= 1 && var.item_timeout_seconds <= 43140, false)
    error_message = "item_timeout_seconds must be between 1 and 43140 (SQS keeps a message invisible for at most 12 hours)."
  }
}

variable "worker_concurrency" {
  description = "WORKER_CONCURRENCY: items one container processes at once."
  type        = number
  default     = 4

  validation {
    condition     = var.worker_concurrency >= 1 && floor(var.worker_concurrency) == var.worker_concurrency
    error_message = "worker_concurrency must be a whole number of at least 1."
  }
}

variable "idle_exit_seconds" {
  description = "IDLE_EXIT_SECONDS: a container exits after the queue stayed empty this long."
  type        = number
  default     = 60

  validation {
    condition     = var.idle_exit_seconds >= 0
    error_message = "idle_exit_seconds must not be negative."
  }
}

variable "stop_grace_seconds" {
  description = "STOP_GRACE_SECONDS: time to finish in-flight items after SIGTERM or a Spot notice (Spot gives 120 s, ECS 30 s by default)."
  type        = number
  default     = 25

  validation {
    condition     = var.stop_grace_seconds >= 0 && var.stop_grace_seconds <= 110
    error_message = "stop_grace_seconds must be between 0 and 110 (a Spot notice comes 2 minutes ahead)."
  }
}
