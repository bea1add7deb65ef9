output "dashboard_name" {
  description = "Name of the CloudWatch dashboard of the stack's runs."
  value       = aws_cloudwatch_dashboard.run.dashboard_name
}

output "dashboard_url" {
  description = "Console URL of the dashboard (`invoke status` prints it)."
  value       = "https://${var.region}.console.aws.amazon.com/cloudwatch/home?region=${var.region}#dashboards:name=${aws_cloudwatch_dashboard.run.dashboard_name}"
}

output "failure_alarm_name" {
  description = "Name of the alarm on the share of items that failed."
  value       = aws_cloudwatch_metric_alarm.failure_rate.alarm_name
}
