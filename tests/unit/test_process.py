"""How one item's failure is classed: permanent, throttled, or worth a later retry.

The class decides what a failure costs: a permanent one goes back at once and is dead-lettered
within seconds, a throttled one is run again inside the same receive, anything else waits out
RETRY_DELAY_SECONDS. S3 answers are injected into a real boto3 client (moto's in-process S3)
through botocore's ``before-call`` event, which lets a handler answer in S3's place.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.in_memory_s3 import in_memory_bucket
from worker.config import load_config
from worker.handlers import RowsToJson
from worker.messages import read_message
from worker.output import ResultStore
from worker.process import Services, process_message

BUCKET = "data"
BODY = json.dumps({"bucket": BUCKET, "key": "in.csv"})


def refuse(s3: Any, operation: str, status: int, code: str) -> None:
    """Make every ``operation`` call answer ``status`` with error ``code``."""

    def answer(**_: Any) -> tuple[Any, dict[str, Any]]:
        error = {"Error": {"Code": code, "Message": f"injected {code}"}}
        return SimpleNamespace(status_code=status), {
            **error,
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    s3.meta.events.register(f"before-call.s3.{operation}", answer)


def run_item(s3: Any, body: str = BODY) -> Any:
    config = load_config({"SQS_QUEUE_URL": "q", "OUTPUT_BUCKET": BUCKET, "QUERY_ENGINE": "local"})
    services = Services(s3=s3, store=ResultStore(s3, 1024**2), handler=RowsToJson("json"))
    return process_message(read_message(body), 1, config, services)


@pytest.mark.parametrize("code", ["AccessDenied", "KeyTooLongError", "MetadataTooLarge"])
def test_a_write_s3_will_always_refuse_is_permanent(code: str) -> None:
    with in_memory_bucket(BUCKET, {"in.csv": b"id\n1\n"}) as s3:
        refuse(s3, "PutObject", 400 if code != "AccessDenied" else 403, code)
        outcome = run_item(s3)
    assert (outcome.kind, outcome.permanent, outcome.throttled) == ("failed", True, False)
    assert code in outcome.reason


def test_slow_down_on_the_write_is_throttling_not_a_failure_of_the_item() -> None:
    with in_memory_bucket(BUCKET, {"in.csv": b"id\n1\n"}) as s3:
        refuse(s3, "PutObject", 503, "SlowDown")
        outcome = run_item(s3)
    assert (outcome.kind, outcome.permanent, outcome.throttled) == ("failed", False, True)


def test_slow_down_on_the_read_is_throttling_too() -> None:
    with in_memory_bucket(BUCKET, {"in.csv": b"id\n1\n"}) as s3:
        refuse(s3, "GetObject", 503, "SlowDown")
        outcome = run_item(s3)
    assert (outcome.kind, outcome.permanent, outcome.throttled) == ("failed", False, True)


def test_access_denied_on_the_source_is_retried_later() -> None:
    """Without s3:ListBucket a missing source also answers 403: it may yet be uploaded."""
    with in_memory_bucket(BUCKET, {"in.csv": b"id\n1\n"}) as s3:
        refuse(s3, "GetObject", 403, "AccessDenied")
        outcome = run_item(s3)
    assert (outcome.kind, outcome.permanent, outcome.throttled) == ("failed", False, False)


def test_unsupported_sql_is_permanent() -> None:
    query = "SELECT UPPER(s.id) FROM S3Object s"
    body = json.dumps({"bucket": BUCKET, "key": "in.csv", "query": query})
    with in_memory_bucket(BUCKET, {"in.csv": b"id\n1\n"}) as s3:
        outcome = run_item(s3, body)
    assert (outcome.kind, outcome.permanent) == ("failed", True)
