output "json" {
  description = "The final step's IAM policy document, as JSON: attach it to the role (or user) it runs as."
  value       = data.aws_iam_policy_document.final.json
}
