"""The worker behind the AWS rules layer: what AWS does and the emulators don't, end to end.

The worker is started exactly as the image starts it; only its endpoint URL points at the
layer (batchspot/awsrules.py) instead of at the emulator. The job-role policy the layer
evaluates is the one Terraform renders (``terraform show -json`` of a plan).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchspot.awsrules import Faults, RulesLayer, aws_rules
from batchspot.emulators import Emulator
from tests.integration.harness import (
    Stack,
    batch_of,
    drain,
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    run_worker,
    send_all,
    start_worker,
    wait_for_event,
    worker_env,
)
from worker.limits import MAX_BATCH_ENTRIES
from worker.manifest import Run, failed

COUNT_ROWS = "tests.integration.handlers:count_rows"

pytestmark = pytest.mark.once


@pytest.fixture
def layer(emulator: Emulator, worker_policy: dict[str, Any]) -> Iterator[RulesLayer]:
    """The rules layer in front of the session's emulator, under the rendered job policy."""
    with aws_rules(emulator.endpoint, policy=worker_policy) as running:
        yield running


def through(aws_env: dict[str, str], layer: RulesLayer, stack: Stack, **settings: str):
    """A worker environment whose every AWS call goes through the layer."""
    return worker_env({**aws_env, "AWS_ENDPOINT_URL": layer.endpoint}, stack, **settings)


def received_once_already(sqs: Any, queue_url: str, count: int) -> None:
    """Receive ``count`` messages and hand them straight back, as a vanished worker would.

    Their next receive is a redelivery (ApproximateReceiveCount 2), which starts with a HEAD
    of the result key.
    """
    seen = 0
    while seen < count:
        for message in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=MAX_BATCH_ENTRIES, WaitTimeSeconds=1
        ).get("Messages", []):
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            seen += 1


def test_a_redelivered_item_is_stored_when_s3_answers_403_for_its_missing_result(
    sqs, s3, aws_env, layer
) -> None:
    """HeadObject API reference: without s3:ListBucket a missing key answers 403, not 404.

    Old behaviour: every redelivered item failed with "HeadObject failed: 403: Forbidden" and,
    with a small maxReceiveCount, was dead-lettered.
    """
    stack = make_stack(sqs, s3, max_receive=2)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 4))
    received_once_already(sqs, stack.queue_url, 4)

    done = run_worker(through(aws_env, layer, stack, HANDLER=COUNT_ROWS))

    assert done.returncode == 0, done.stderr
    items = log_events(done.stdout, "item")
    assert [(e["outcome"], e["attempt"]) for e in items] == [("ok", 2)] * 4
    assert layer.injected["s3.403-missing-key"] >= 4, "the HEADs were answered as AWS does"
    assert len(output_objects(s3, stack.output_bucket)) == 4
    assert queue_depths(sqs, stack.dlq_url) == (0, 0)


def test_a_redelivered_item_already_stored_is_not_stored_again(sqs, s3, aws_env, layer) -> None:
    stack = make_stack(sqs, s3, max_receive=3)
    bodies = put_sources(s3, stack, 3)
    send_all(sqs, stack.queue_url, bodies)
    first = run_worker(through(aws_env, layer, stack, HANDLER=COUNT_ROWS))
    assert first.returncode == 0, first.stderr
    send_all(sqs, stack.queue_url, bodies)  # as if the deletes had been lost
    received_once_already(sqs, stack.queue_url, 3)

    again = run_worker(through(aws_env, layer, stack, HANDLER=COUNT_ROWS))

    assert again.returncode == 0, again.stderr
    assert [e["outcome"] for e in log_events(again.stdout, "item")] == ["already-done"] * 3
    assert len(output_objects(s3, stack.output_bucket)) == 3


def test_a_409_on_the_last_receive_of_an_item_another_holder_stored_is_not_dead_lettered(
    sqs, s3, aws_env, layer
) -> None:
    """S3 API Reference, PutObject, If-None-Match: a concurrent operation on the key gets 409
    ConditionalRequestConflict. maxReceiveCount is 1, so every receive is the last: the
    results are already stored (another holder's), and every write is answered 409.

    Old behaviour: the 409 failed the item and sent it to the dead-letter queue although its
    result was stored.
    """
    stack = make_stack(sqs, s3, max_receive=1)
    bodies = put_sources(s3, stack, 3)
    send_all(sqs, stack.queue_url, bodies)
    assert run_worker(through(aws_env, layer, stack, HANDLER=COUNT_ROWS)).returncode == 0
    stored = output_objects(s3, stack.output_bucket)
    send_all(sqs, stack.queue_url, bodies)  # the other holder's copies
    layer.set_faults(Faults(conditional_conflict_rate=1.0))

    again = run_worker(through(aws_env, layer, stack, HANDLER=COUNT_ROWS))

    assert again.returncode == 0, again.stderr
    assert [e["outcome"] for e in log_events(again.stdout, "item")] == ["already-done"] * 3
    assert layer.injected["s3.conditional-conflict"] == 3
    assert output_objects(s3, stack.output_bucket) == stored
    assert drain(sqs, stack.dlq_url) == []


def test_a_throttling_burst_dead_letters_no_item(tmp_path: Path, sqs, s3, aws_env, layer):
    """S3 503 SlowDown and SQS RequestThrottled are AWS asking to slow down, not failures.

    Every S3 call is refused until the worker reports that an item outlasted botocore's
    retries; then the burst ends. maxReceiveCount is 1: an item that failed even once would
    be in the dead-letter queue. Old behaviour: each such item was given back as failed.
    """
    layer.set_faults(Faults(s3_slowdown_rate=1.0, sqs_throttle_rate=0.2, seed=7))
    stack = make_stack(sqs, s3, max_receive=1)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 8))
    # botocore's own setting, so the burst outlasts the retries within seconds.
    env = through(aws_env, layer, stack, HANDLER=COUNT_ROWS, AWS_MAX_ATTEMPTS="2")
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)

    wait_for_event(log, "throttled", timeout=60)
    layer.set_faults(Faults(sqs_throttle_rate=0.2, seed=8))

    assert worker.wait(timeout=120) == 0
    events = log_events(log.read_text())
    assert Counter(e["outcome"] for e in events if e["event"] == "item") == {"ok": 8}
    assert len(output_objects(s3, stack.output_bucket)) == 8
    assert drain(sqs, stack.dlq_url) == []


def test_failed_heartbeat_entries_are_retried_before_the_item_lapses(
    tmp_path: Path, sqs, s3, aws_env, layer
) -> None:
    """ChangeMessageVisibilityBatch can fail per entry while the call succeeds.

    Old behaviour: a failed entry's deadline moved on as if extended, so the message lapsed
    and a second receive ran the custom code again.
    """
    layer.set_faults(Faults(visibility_entry_failure_rate=0.25, seed=3))
    stack = make_stack(sqs, s3, visibility=6, max_receive=5)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 6))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = through(
        aws_env,
        layer,
        stack,
        HANDLER=COUNT_ROWS,
        WORKER_CONCURRENCY="6",
        TEST_MARK_DIR=str(marks),
        TEST_SLEEP_SECONDS="8",
    )

    done = run_worker(env)

    assert done.returncode == 0, done.stderr
    assert layer.injected["sqs.visibility-entry-failed"] > 0
    runs = Counter(path.name.split(".")[0] for path in marks.iterdir())
    assert sorted(runs.values()) == [1] * 6, f"custom code runs per item: {runs}"
    assert len(output_objects(s3, stack.output_bucket)) == 6


def test_long_keys_and_metadata_stay_within_aws_limits(sqs, s3, aws_env, layer) -> None:
    """S3 refuses keys over 1024 bytes (KeyTooLongError) and metadata over 2 KB.

    The source key is 1004 bytes of UTF-8 ('é' is two): its derived result key would be over
    1024, and its URL-quoted name in the result's metadata about 3 KB.
    """
    stack = make_stack(sqs, s3)
    key = "src/" + "é" * 500 + ".csv"
    s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"id\n1\n")
    send_all(sqs, stack.queue_url, [json.dumps({"bucket": stack.input_bucket, "key": key})])

    done = run_worker(through(aws_env, layer, stack))

    assert done.returncode == 0, done.stderr
    assert [e["outcome"] for e in log_events(done.stdout, "item")] == ["ok"]
    (stored,) = output_objects(s3, stack.output_bucket)
    assert len(stored.encode()) <= 1024 and stored.startswith(f"results/{stack.input_bucket}/")
    assert layer.injected["s3.key-too-long"] == layer.injected["s3.metadata-too-large"] == 0


def test_a_batch_dead_lettered_whole_records_a_failure_for_each_of_its_items(
    sqs, s3, aws_env, layer
) -> None:
    """A batch that cannot be stored on its last receive (every write answered 409, S3 API
    Reference, PutObject, If-None-Match) fails all its items: the run's failure record names
    each, so the manifest counts 3 failed items, not one message."""
    stack = make_stack(sqs, s3, max_receive=1)
    send_all(sqs, stack.queue_url, [batch_of(put_sources(s3, stack, 3))])
    layer.set_faults(Faults(conditional_conflict_rate=1.0))

    done = run_worker(through(aws_env, layer, stack, HANDLER=COUNT_ROWS))

    assert done.returncode == 0, done.stderr
    (line,) = log_events(done.stdout, "item")
    assert (line["outcome"], line["next"]) == ("failed", "dead-letter queue")
    assert line["items_failed"] == 3
    # A worker outside Batch runs as job "local" (worker.config).
    failures = list(failed(s3, Run("local", stack.output_bucket, "results/", stack.queue_url)))
    assert sorted(entry.source for entry in failures) == [
        f"s3://{stack.input_bucket}/src/item {n:04d}.csv" for n in range(3)
    ]
    assert {entry.reason for entry in failures} == {line["reason"]}
    assert len(drain(sqs, stack.dlq_url)) == 1
