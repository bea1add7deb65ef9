"""Drop-in for the original .NET worker: its messages, its default output, its data."""

from __future__ import annotations

import csv
import io
import json

from batchspot.sample_data import month_csv, upload_dataset
from tests.integration.harness import (
    drain,
    log_events,
    make_stack,
    output_objects,
    run_worker,
    send_all,
    worker_env,
)

ROWS_PER_FILE = 40
LIMIT = 5


def first_records(month: int) -> list[dict[str, str]]:
    """What the original stored: the first LIMIT records, header names, values as text."""
    reader = csv.DictReader(io.StringIO(month_csv(month, ROWS_PER_FILE)))
    return [row for _, row in zip(range(LIMIT), reader, strict=False)]


def test_original_messages_give_the_original_results(sqs, s3, aws_env) -> None:
    stack = make_stack(sqs, s3, max_receive=1)
    archive = f"{stack.output_bucket}-archive"
    s3.create_bucket(Bucket=archive)
    upload_dataset(s3, stack.input_bucket, rows=ROWS_PER_FILE)
    # As the original task maker did by hand: one message per listed object.
    listing = s3.list_objects_v2(Bucket=stack.input_bucket, Prefix="trip data/")["Contents"]
    keys = sorted(entry["Key"] for entry in listing)
    assert len(keys) == 12
    destinations = [stack.output_bucket] * 10 + [archive, "not-our-bucket"]
    messages = [
        {"SourceBucketName": stack.input_bucket, "SourceKeyName": key, "DestBucketName": dest}
        for key, dest in zip(keys, destinations, strict=True)
    ]
    send_all(sqs, stack.queue_url, [json.dumps(m) for m in messages])

    env = worker_env(
        aws_env, stack, S3_QUERY_LIMIT=f" LIMIT {LIMIT}", ALLOWED_OUTPUT_BUCKETS=archive
    )
    result = run_worker(env)
    assert result.returncode == 0, result.stderr

    stored = output_objects(s3, stack.output_bucket)
    assert len(stored) == 10
    for key, body in stored.items():
        month = int(key.split("yellow_tripdata_2018-")[1][:2])
        assert key.startswith(f"results/{stack.input_bucket}/trip data/yellow_tripdata_2018-")
        assert json.loads(body) == first_records(month)
    (archived,) = output_objects(s3, archive).values()
    assert json.loads(archived) == first_records(11)
    (refused,) = drain(sqs, stack.dlq_url)
    assert json.loads(refused)["DestBucketName"] == "not-our-bucket"
    failure = next(e for e in log_events(result.stdout, "item") if e["outcome"] == "failed")
    assert (
        "'not-our-bucket' is not OUTPUT_BUCKET nor in ALLOWED_OUTPUT_BUCKETS" in failure["reason"]
    )
    assert failure["source"] == f"s3://{stack.input_bucket}/trip data/yellow_tripdata_2018-12.csv"
