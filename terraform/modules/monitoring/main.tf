# A CloudWatch dashboard of a run and an alarm on its failure rate, from the metrics the
# workers' own log lines embed (Embedded Metric Format: namespace BatchSpot, dimension
# JobQueue; see worker/metrics.py) and from SQS's queue depths. Nothing here costs an API
# call from the workers.

locals {
  namespace = "BatchSpot"
  # Every BatchSpot metric is read for the whole job queue (the workers also publish it per
  # job name, for workloads sharing a queue).
  queue_dimension = ["JobQueue", var.job_queue_name]
  # An item line counts its outcome as 1 and the others as 0, so Average is the share failed.
  failure_metric = "items_failed"
}

resource "aws_cloudwatch_metric_alarm" "failure_rate" {
  alarm_name          = "${var.name}-item-failure-rate"
  alarm_description   = "More than ${var.failure_rate_threshold * 100} % of the items settled on job queue ${var.job_queue_name} in 5 minutes failed; the failures' reasons are in the workers' item log lines (`invoke report`)."
  namespace           = local.namespace
  metric_name         = local.failure_metric
  dimensions          = { JobQueue = var.job_queue_name }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.failure_rate_threshold
  # No items settled, no data: nothing is failing.
  treat_missing_data = "notBreaching"
  alarm_actions      = var.alarm_actions
  ok_actions         = var.alarm_actions
}

locals {
  # The graphs, in the dashboard's order: where each stands, and what it draws. Every one is
  # a time series of this region; `extra` holds what only that graph has.
  graphs = [
    {
      x = 0, y = 0, width = 12, title = "Queue depths", stat = "Maximum", period = 60, extra = {}
      metrics = [
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.queue_name, { label = "work queue: waiting" }],
        ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", var.queue_name, { label = "work queue: in flight" }],
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.dlq_name, { label = "dead-letter queue" }],
      ]
    },
    {
      x = 12, y = 0, width = 12, title = "Items per minute", stat = "Sum", period = 60, extra = {}
      metrics = [
        concat([local.namespace, "items_ok"], local.queue_dimension, [{ label = "succeeded" }]),
        concat([local.namespace, local.failure_metric], local.queue_dimension, [{ label = "failed attempts" }]),
        concat([local.namespace, "items_already_done"], local.queue_dimension, [{ label = "already done" }]),
      ]
    },
    {
      x = 0, y = 6, width = 8, title = "Item duration (ms)", stat = "p50", period = 60, extra = {}
      metrics = [
        concat([local.namespace, "duration_ms"], local.queue_dimension, [{ stat = "p50", label = "p50" }]),
        concat([local.namespace, "duration_ms"], local.queue_dimension, [{ stat = "p99", label = "p99" }]),
      ]
    },
    {
      x = 8, y = 6, width = 8, title = "AWS calls per item (per worker process, at its exit)", stat = "Average", period = 300, extra = {}
      metrics = [
        concat([local.namespace, "aws_calls_per_item"], local.queue_dimension, [{ label = "calls per item" }]),
      ]
    },
    {
      x = 16, y = 6, width = 8, title = "Peak memory per worker process (MiB) against the job's", stat = "Maximum", period = 300
      metrics = [
        concat([local.namespace, "peak_rss_mib"], local.queue_dimension, [{ label = "peak RSS of a process" }]),
      ]
      extra = {
        annotations = {
          horizontal = [
            { label = "job memory", value = var.job_memory_mib },
            { label = "job memory / ${var.worker_processes} processes", value = floor(var.job_memory_mib / var.worker_processes) },
          ]
        }
        yAxis = { left = { min = 0 } }
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "run" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = concat(
      [for graph in local.graphs : {
        type = "metric", x = graph.x, y = graph.y, width = graph.width, height = 6
        properties = merge({
          title   = graph.title
          region  = var.region
          stat    = graph.stat
          period  = graph.period
          view    = "timeSeries"
          metrics = graph.metrics
        }, graph.extra)
      }],
      [
        {
          type = "alarm", x = 0, y = 12, width = 12, height = 3
          properties = {
            title  = "Alarms"
            alarms = [aws_cloudwatch_metric_alarm.failure_rate.arn, var.dlq_alarm_arn]
          }
        },
        {
          type = "log", x = 12, y = 12, width = 12, height = 3
          properties = {
            title  = "Items by query engine"
            region = var.region
            view   = "table"
            query  = "SOURCE '${var.log_group_name}' | filter event = \"item\" | stats count(*) as items by engine"
          }
        },
      ]
    )
  })
}
