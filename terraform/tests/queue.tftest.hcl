# Plan-level behaviour of modules/queue, offline against a mocked AWS provider.

mock_provider "aws" {}

# Each queue gets its own ARN and URL, so an assert that compares wiring (redrive target,
# outputs) fails when the work queue and the DLQ are swapped.
override_resource {
  target = aws_sqs_queue.work
  values = {
    arn = "arn:aws:sqs:us-east-1:123456789012:batchspot"
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot"
  }
}

override_resource {
  target = aws_sqs_queue.dlq
  values = {
    arn = "arn:aws:sqs:us-east-1:123456789012:batchspot-dlq"
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot-dlq"
  }
}

run "work_queue_redrives_to_an_encrypted_dlq_with_an_alarm" {
  module {
    source = "./modules/queue"
  }
  command = apply

  variables {
    name                       = "batchspot"
    max_receive_count          = 5
    visibility_timeout_seconds = 600
  }

  assert {
    condition     = jsondecode(aws_sqs_queue.work.redrive_policy).deadLetterTargetArn == "arn:aws:sqs:us-east-1:123456789012:batchspot-dlq"
    error_message = "The work queue must redrive to the DLQ."
  }
  assert {
    condition     = jsondecode(aws_sqs_queue.work.redrive_policy).maxReceiveCount == 5
    error_message = "maxReceiveCount must follow the variable."
  }
  assert {
    condition     = aws_sqs_queue.work.sqs_managed_sse_enabled && aws_sqs_queue.dlq.sqs_managed_sse_enabled
    error_message = "Both queues must be encrypted at rest."
  }
  assert {
    condition     = aws_sqs_queue.work.visibility_timeout_seconds == 600 && aws_sqs_queue.dlq.name == "batchspot-dlq"
    error_message = "Visibility timeout and DLQ name must follow the variables."
  }
  assert {
    condition     = aws_sqs_queue.dlq.message_retention_seconds >= aws_sqs_queue.work.message_retention_seconds
    error_message = "Failed items must outlive the work queue's retention, or they vanish before anyone looks."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.dlq_not_empty.dimensions.QueueName == "batchspot-dlq" && aws_cloudwatch_metric_alarm.dlq_not_empty.threshold == 0
    error_message = "The alarm must fire as soon as the DLQ holds a message."
  }
  assert {
    condition = (output.queue_url == "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot"
      && output.queue_arn == "arn:aws:sqs:us-east-1:123456789012:batchspot"
      && output.dlq_url == "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot-dlq"
    && output.dlq_arn == "arn:aws:sqs:us-east-1:123456789012:batchspot-dlq")
    error_message = "Outputs must carry each queue's own URL and ARN."
  }
}

run "rejects_zero_receives" {
  module {
    source = "./modules/queue"
  }
  command = plan

  variables {
    name              = "batchspot"
    max_receive_count = 0
  }

  expect_failures = [var.max_receive_count]
}
