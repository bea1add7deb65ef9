# A CloudWatch dashboard of a run and an alarm on its failure rate, from the metrics the
# workers' own log lines embed (Embedded Metric Format: namespace BatchSpot, dimension
# JobQueue; see worker/metrics.py) and from SQS's queue depths. Nothing here costs an API
# call from the workers.

locals {
  namespace = "BatchSpot"
  # Every BatchSpot metric is read for the whole job queue (the workers also publish it per
  # job name, for workloads sharing a queue).
  queue_dimension = ["JobQueue", var.job_queue_name]
  # An item line counts its message's items by outcome: 1 for a single item, up to 1000 for a
  # batch. Averaging items_failed would weigh a batch of 100 as one line, so the failure rate
  # is the failed share of the items' Sums, in percent (CloudWatch metric math, "Using math
  # expressions with CloudWatch metrics"). FILL gives a period with lines of one outcome only
  # a 0 for the other; IF gives a period with no items no data point rather than 0 / 0, and
  # the alarm counts a missing point as not breaching.
  failure_metric        = "items_failed"
  failure_percent_label = "items failed (% of items attempted)"
  failure_percent       = "IF(FILL(ok, 0) + FILL(failed, 0) > 0, 100 * FILL(failed, 0) / (FILL(ok, 0) + FILL(failed, 0)))"
  # The ids the expression reads, with the item metrics they stand for.
  failure_inputs = { ok = "items_ok", failed = local.failure_metric }
}

resource "aws_cloudwatch_metric_alarm" "failure_rate" {
  alarm_name          = "${var.name}-item-failure-rate"
  alarm_description   = "More than ${var.failure_rate_threshold * 100} % of the items attempted (succeeded or failed) on job queue ${var.job_queue_name} in 5 minutes failed; the failures' reasons are in the workers' item log lines (`invoke report`)."
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.failure_rate_threshold * 100

  dynamic "metric_query" {
    for_each = local.failure_inputs
    content {
      id = metric_query.key
      metric {
        namespace   = local.namespace
        metric_name = metric_query.value
        dimensions  = { JobQueue = var.job_queue_name }
        stat        = "Sum"
        period      = 300
      }
    }
  }
  metric_query {
    id          = "failed_percent"
    expression  = local.failure_percent
    label       = local.failure_percent_label
    return_data = true
  }
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
    {
      x = 0, y = 12, width = 12, title = "Items failed (% of items attempted, as the alarm reads it)", stat = "Sum", period = 300
      metrics = concat(
        [for id, metric in local.failure_inputs : concat([local.namespace, metric], local.queue_dimension, [{ id = id, visible = false }])],
        [[{ id = "failed_percent", expression = local.failure_percent, label = local.failure_percent_label }]],
      )
      extra = {
        annotations = { horizontal = [{ label = "alarm threshold", value = var.failure_rate_threshold * 100 }] }
        yAxis       = { left = { min = 0 } }
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
          type = "alarm", x = 12, y = 12, width = 12, height = 3
          properties = {
            title  = "Alarms"
            alarms = [aws_cloudwatch_metric_alarm.failure_rate.arn, var.dlq_alarm_arn]
          }
        },
        {
          type = "log", x = 12, y = 15, width = 12, height = 3
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
