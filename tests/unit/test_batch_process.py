"""A batch's result lines on disk: an item that fails halfway through its line leaves none of it.

The rows of an item stream into its line as the query produces them, so a query can fail
after part of the line is written (a record over S3 Select's 1 MiB, found mid-object). That
part must go, or the batch's JSON lines would hold a broken one.
"""

from __future__ import annotations

import json

from tests.unit.in_memory_s3 import in_memory_bucket
from worker.batches import read_lines
from worker.config import load_config
from worker.handlers import RowsToJson
from worker.messages import read_message
from worker.output import ResultStore
from worker.process import Services, process_message
from worker.query.local.caps import OVER_MAX_RECORD_SIZE

BUCKET = "data"
# Many small rows (streamed out before the next is read), then one record over 1 MiB.
BROKEN_MIDWAY = b"id\n" + b"1\n" * 200_000 + b"x" * (1 << 21) + b"\n"


def test_an_item_failing_midway_leaves_no_part_of_its_line() -> None:
    sources = {"a.csv": b"id\n1\n", "broken.csv": BROKEN_MIDWAY, "b.csv": b"id\n2\n"}
    body = json.dumps({"items": [{"bucket": BUCKET, "key": key} for key in sources]})
    config = load_config({"SQS_QUEUE_URL": "q", "OUTPUT_BUCKET": BUCKET, "QUERY_ENGINE": "local"})
    with in_memory_bucket(BUCKET, sources) as s3:
        services = Services(s3=s3, store=ResultStore(s3, 64 << 20), handler=RowsToJson("json"))
        outcome = process_message(read_message(body), 1, config, services)
        key = outcome.fields["output"].split("/", 3)[3]
        stored = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    assert (outcome.kind, outcome.items, outcome.failed_lines) == ("ok", 3, 1)
    lines = list(read_lines(stored.splitlines()))
    assert [line.result for line in lines] == [[{"id": "1"}], None, [{"id": "2"}]]
    assert OVER_MAX_RECORD_SIZE in (lines[1].error or "")


def test_a_malformed_batch_is_a_permanent_failure_saying_why() -> None:
    """Refused at once, so it reaches the dead-letter queue without waiting out retries."""
    config = load_config({"SQS_QUEUE_URL": "q", "OUTPUT_BUCKET": BUCKET})
    twice = {"bucket": BUCKET, "key": "a.csv"}
    with in_memory_bucket(BUCKET) as s3:
        services = Services(s3=s3, store=ResultStore(s3, 1024), handler=RowsToJson("json"))
        body = json.dumps({"items": [twice, twice]})
        outcome = process_message(read_message(body), 1, config, services)
    assert (outcome.kind, outcome.permanent) == ("failed", True)
    assert outcome.reason == "malformed message: field 'items' names a source more than once"
