output "json" {
  description = "The worker's IAM policy document, as JSON: attach it to the role (or user) the worker runs as."
  value       = data.aws_iam_policy_document.worker.json
}
