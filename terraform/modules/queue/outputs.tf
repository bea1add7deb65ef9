output "queue_url" {
  description = "URL of the work queue (the worker's SQS_QUEUE_URL)."
  value       = aws_sqs_queue.work.url
}

output "queue_arn" {
  description = "ARN of the work queue."
  value       = aws_sqs_queue.work.arn
}

output "queue_name" {
  description = "Name of the work queue."
  value       = aws_sqs_queue.work.name
}

output "dlq_url" {
  description = "URL of the dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "dlq_alarm_name" {
  description = "Name of the CloudWatch alarm on the dead-letter queue's depth."
  value       = aws_cloudwatch_metric_alarm.dlq_not_empty.alarm_name
}

output "dlq_name" {
  description = "Name of the dead-letter queue."
  value       = aws_sqs_queue.dlq.name
}

output "dlq_alarm_arn" {
  description = "ARN of the CloudWatch alarm on the dead-letter queue's depth."
  value       = aws_cloudwatch_metric_alarm.dlq_not_empty.arn
}
