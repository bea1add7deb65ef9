variable "name" {
  description = "Name of the dashboard and prefix of the alarm's name."
  type        = string
}

variable "region" {
  description = "Region of the stack: the dashboard's widgets read its metrics, the URL opens its console."
  type        = string
}

variable "job_queue_name" {
  description = "Batch job queue whose workers' metrics (namespace BatchSpot, dimension JobQueue) are shown."
  type        = string
}

variable "queue_name" {
  description = "Name of the SQS work queue."
  type        = string
}

variable "dlq_name" {
  description = "Name of the SQS dead-letter queue."
  type        = string
}

variable "dlq_alarm_arn" {
  description = "ARN of the dead-letter queue's alarm, shown beside the failure-rate alarm."
  type        = string
}

variable "log_group_name" {
  description = "CloudWatch log group of the workers (the items-by-engine widget queries it)."
  type        = string
}

variable "job_memory_mib" {
  description = "Memory of one worker container (the job definition's MEMORY), drawn against peak RSS."
  type        = number
}

variable "worker_processes" {
  description = "Worker processes per container: each one's share of the job's memory is drawn too."
  type        = number
}

variable "failure_rate_threshold" {
  description = "The alarm fires when more than this share of the items attempted in 5 minutes failed (0.05 = 5 %)."
  type        = number
  default     = 0.05

  validation {
    condition     = var.failure_rate_threshold > 0 && var.failure_rate_threshold < 1
    error_message = "failure_rate_threshold must be a share between 0 and 1, e.g. 0.05."
  }
}

variable "alarm_actions" {
  description = "ARNs (SNS topics, ...) notified when the failure rate passes its threshold."
  type        = list(string)
  default     = []
}
