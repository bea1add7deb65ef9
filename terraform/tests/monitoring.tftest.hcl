# Plan-level behaviour of modules/monitoring, offline against a mocked AWS provider.

mock_provider "aws" {}

variables {
  name             = "batchspot"
  region           = "eu-west-1"
  job_queue_name   = "batchspot-spot"
  queue_name       = "batchspot"
  dlq_name         = "batchspot-dlq"
  dlq_alarm_arn    = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:batchspot-dlq-not-empty"
  log_group_name   = "/aws/batch/batchspot"
  job_memory_mib   = 1152
  worker_processes = 2
}

run "dashboard_shows_the_run_and_the_alarm_watches_the_failure_rate" {
  module {
    source = "./modules/monitoring"
  }
  command = apply

  assert {
    condition = ({ for q in aws_cloudwatch_metric_alarm.failure_rate.metric_query : q.id => [
      one(q.metric[*].namespace), one(q.metric[*].metric_name), one(q.metric[*].stat),
      one(q.metric[*].dimensions.JobQueue), one(q.metric[*].period)] if length(q.metric) > 0 } == {
      ok     = ["BatchSpot", "items_ok", "Sum", "batchspot-spot", 300]
      failed = ["BatchSpot", "items_failed", "Sum", "batchspot-spot", 300]
    })
    error_message = "The alarm must read the Sums of items_ok and items_failed on the job queue over 5 minutes: a batch's line counts its items, so an Average would weigh a batch as one item."
  }
  assert {
    condition = ([for q in aws_cloudwatch_metric_alarm.failure_rate.metric_query : q.expression if q.return_data == true] == [
      "IF(FILL(ok, 0) + FILL(failed, 0) > 0, 100 * FILL(failed, 0) / (FILL(ok, 0) + FILL(failed, 0)))"
    ] && aws_cloudwatch_metric_alarm.failure_rate.threshold == 5)
    error_message = "The alarm must fire on the failed share of items in percent (5 for 0.05), with no data point when no item was attempted."
  }
  assert {
    condition = ([for m in jsondecode(aws_cloudwatch_dashboard.run.dashboard_body).widgets[5].properties.metrics : m[0].expression if can(m[0].expression)]
    == [for q in aws_cloudwatch_metric_alarm.failure_rate.metric_query : q.expression if q.return_data == true])
    error_message = "The dashboard must draw the failure rate with the alarm's own expression."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.failure_rate.treat_missing_data == "notBreaching"
    error_message = "No items settled is no failure: missing data must not fire the alarm."
  }
  assert {
    condition = toset([for w in jsondecode(aws_cloudwatch_dashboard.run.dashboard_body).widgets : w.properties.title]) == toset([
      "Queue depths", "Items per minute", "Item duration (ms)",
      "AWS calls per item (per worker process, at its exit)",
      "Peak memory per worker process (MiB) against the job's",
      "Items failed (% of items attempted, as the alarm reads it)", "Alarms", "Items by query engine",
    ])
    error_message = "The dashboard must show depths, items per minute, durations, calls per item, memory, failure rate, alarms and engines."
  }
  assert {
    condition     = [for m in jsondecode(aws_cloudwatch_dashboard.run.dashboard_body).widgets[0].properties.metrics : m[3]] == ["batchspot", "batchspot", "batchspot-dlq"]
    error_message = "Queue depths must read the work queue (waiting, in flight) and the dead-letter queue."
  }
  assert {
    condition     = [for m in jsondecode(aws_cloudwatch_dashboard.run.dashboard_body).widgets[2].properties.metrics : m[4].stat] == ["p50", "p99"]
    error_message = "Item duration must be drawn as p50 and p99."
  }
  assert {
    condition     = [for a in jsondecode(aws_cloudwatch_dashboard.run.dashboard_body).widgets[4].properties.annotations.horizontal : a.value] == [1152, 576]
    error_message = "Peak RSS must be drawn against the job's memory and each process's share of it."
  }
  assert {
    condition     = contains(jsondecode(aws_cloudwatch_dashboard.run.dashboard_body).widgets[6].properties.alarms, var.dlq_alarm_arn)
    error_message = "The dead-letter alarm must stand beside the failure-rate alarm."
  }
  assert {
    condition     = output.dashboard_url == "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#dashboards:name=batchspot"
    error_message = "The URL must open the dashboard in the stack's region."
  }
}

run "rejects_a_threshold_that_is_not_a_share" {
  module {
    source = "./modules/monitoring"
  }
  command = plan

  variables {
    failure_rate_threshold = 5
  }

  expect_failures = [var.failure_rate_threshold]
}
