"""Both sample custom codes, plugged into the real worker, summarise the taxi data alike."""

from __future__ import annotations

import csv
import io
import json

import pytest

from batchspot.sample_data import month_csv, upload_dataset
from examples.handlers.trip_stats import summarise

from .harness import make_stack, output_objects, run_worker, send_all, worker_env

ROWS = 300


def expected_summaries() -> list[dict]:
    """Each month's summary, computed without the worker."""
    months = (csv.DictReader(io.StringIO(month_csv(m, ROWS))) for m in range(1, 13))
    return [summarise("\n".join(json.dumps(row) for row in month)) for month in months]


@pytest.mark.parametrize(
    "settings",
    [
        {"HANDLER": "examples.handlers.trip_stats:summarise"},
        {"HANDLER_COMMAND": "sh examples/command/trip_stats.sh", "ROWS_FORMAT": "csv"},
    ],
    ids=["python-callable", "sh-command"],
)
def test_every_month_is_summarised(sqs, s3, aws_env, settings):
    stack = make_stack(sqs, s3)
    keys = upload_dataset(s3, stack.input_bucket, rows=ROWS)
    messages = [json.dumps({"bucket": stack.input_bucket, "key": key}) for key in keys]
    send_all(sqs, stack.queue_url, messages)

    result = run_worker(worker_env(aws_env, stack, **settings))

    assert result.returncode == 0, result.stderr
    stored = [json.loads(body) for body in output_objects(s3, stack.output_bucket).values()]
    assert sorted(stored, key=json.dumps) == sorted(expected_summaries(), key=json.dumps)
