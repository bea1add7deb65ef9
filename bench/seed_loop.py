"""The baseline: the original seed-style loop, one item at a time, in one process.

receive 1 -> query -> custom code -> put -> delete 1, strictly in sequence, until a receive
comes back empty. It uses the worker's own query engine and the same custom code, so the
benchmark compares only the loop around them. Configured like the worker (``SQS_QUEUE_URL``,
``OUTPUT_BUCKET``, ``OUTPUT_PREFIX``, ``QUERY_ENGINE``); prints one JSON summary line.
"""

from __future__ import annotations

import json
import os
import time

import boto3

from batchspot_support.sample_code import summarise
from worker.keys import derive_output_key
from worker.messages import WorkItem, parse_message
from worker.metrics import CallCounter
from worker.query import QueryRequest, run_query


def main() -> None:
    queue_url = os.environ["SQS_QUEUE_URL"]
    bucket = os.environ["OUTPUT_BUCKET"]
    prefix = os.environ.get("OUTPUT_PREFIX", "results/")
    engine = os.environ.get("QUERY_ENGINE", "auto")
    counter = CallCounter()
    sqs = counter.attach(boto3.client("sqs"))
    s3 = counter.attach(boto3.client("s3"))
    items = 0
    first = last = None
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            break
        message = messages[0]
        item = parse_message(message["Body"])
        assert isinstance(item, WorkItem) and item.etag
        request = QueryRequest(item.bucket, item.key, "SELECT * FROM S3Object s", item.input)
        rows = run_query(s3, request, engine).text  # type: ignore[arg-type]
        s3.put_object(
            Bucket=bucket,
            Key=derive_output_key(prefix, item.bucket, item.key, item.etag),
            Body=json.dumps(summarise(rows)).encode(),
            ContentType="application/json",
        )
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        items += 1
        last = time.time()
        first = first or last
    calls = counter.snapshot()
    summary = {"event": "summary", "ok": items, "aws_calls": sum(calls.values()), "calls": calls}
    print(json.dumps({**summary, "first_item_ts": first, "last_item_ts": last}), flush=True)


if __name__ == "__main__":
    main()
