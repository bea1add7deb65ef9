"""Batch messages end to end: one result object per batch, whatever its items meet.

Each test runs ``python -m worker`` as the image does, against the session's emulator. A batch
is stored once, with a line per item; a permanent failure is one item's line, a transient one
sends the batch back whole (until its last receive), and a redelivered batch already stored
costs one HEAD. Only the redelivery, whose HEADs meet each emulator's answers for a missing
key, runs on both emulators; the rest is the worker's own logic, run once (``once``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    Stack,
    batch_of,
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    receive_when_visible,
    run_worker,
    send_all,
    worker_env,
)
from worker.batches import read_lines
from worker.keys import BATCH_RESULTS

PREFIX = "results/"
# The local engine refuses these CSV settings before reading a byte: a permanent failure.
UNUSABLE_CSV = {"format": "CSV", "delimiter": ",", "quote": ","}


def stored_batch(s3: Any, stack: Stack) -> tuple[str, list[Any]]:
    """The one result object in the output bucket, which must be a batch's: its key and lines."""
    outputs = output_objects(s3, stack.output_bucket)
    assert len(outputs) == 1, sorted(outputs)
    ((key, body),) = outputs.items()
    assert key.startswith(PREFIX + BATCH_RESULTS) and key.endswith(".jsonl"), key
    return key, list(read_lines(body.splitlines()))


def run(env: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run a worker to the end; return its item lines and its summary."""
    done = run_worker(env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (summary,) = log_events(done.stdout, "summary")
    return log_events(done.stdout, "item"), summary


@pytest.mark.once
def test_a_poison_item_is_its_own_line_and_its_neighbours_are_stored(sqs, s3, aws_env) -> None:
    """One result object on the first receive: N-1 result lines and the poison's reason."""
    stack = make_stack(sqs, s3, max_receive=2)
    bodies = put_sources(s3, stack, 4)
    poison = "src/unusable.csv"
    s3.put_object(Bucket=stack.input_bucket, Key=poison, Body=b"id\n1\n")
    items = [json.loads(body) for body in bodies]
    items.insert(2, {"bucket": stack.input_bucket, "key": poison, "input": UNUSABLE_CSV})
    send_all(sqs, stack.queue_url, [json.dumps({"items": items})])

    lines, summary = run(worker_env(aws_env, stack, QUERY_ENGINE="local"))

    assert [(e["outcome"], e["attempt"]) for e in lines] == [("ok", 1)], lines
    assert (lines[0]["items"], lines[0]["items_ok"], lines[0]["items_failed"]) == (5, 4, 1)
    assert lines[0]["engine"] == "local"
    key, stored = stored_batch(s3, stack)
    assert [line.source.rsplit("/", 1)[1] for line in stored] == [
        "item 0000.csv",
        "item 0001.csv",
        "unusable.csv",
        "item 0002.csv",
        "item 0003.csv",
    ]
    (failed,) = [line for line in stored if line.failed]
    assert "quote and delimiter are the same character" in failed.error
    assert [line.result for line in stored if not line.failed][1] == [{"id": "1", "value": "10"}]
    metadata = s3.head_object(Bucket=stack.output_bucket, Key=key)["Metadata"]
    assert (metadata["items"], metadata["failed-items"]) == ("5", "1")
    assert (summary["items_ok"], summary["items_failed"], summary["ok"]) == (4, 1, 1)
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    assert queue_depths(sqs, stack.dlq_url) == (0, 0)


@pytest.mark.once
def test_a_transient_item_failure_sends_the_batch_back_whole(
    tmp_path: Path, sqs, s3, aws_env
) -> None:
    """Nothing is stored on the failed receive; the redelivery stores the batch once."""
    stack = make_stack(sqs, s3, max_receive=3)
    send_all(sqs, stack.queue_url, [batch_of(put_sources(s3, stack, 3))])
    env = worker_env(
        aws_env,
        stack,
        HANDLER="tests.integration.handlers:fail_first_call",
        TEST_FLAKY_ID="1",
        TEST_MARK_DIR=str(tmp_path),
    )

    lines, _ = run(env)

    assert [(e["outcome"], e["attempt"]) for e in lines] == [("failed", 1), ("ok", 2)], lines
    assert "item 1 (s3://" in lines[0]["reason"]
    assert "a transient failure of the custom code" in lines[0]["reason"]
    assert lines[0]["items_failed"] == 3
    _, stored = stored_batch(s3, stack)
    assert [line.result["ids"] for line in stored] == [["0"], ["1"], ["2"]]
    assert queue_depths(sqs, stack.queue_url) == (0, 0)


@pytest.mark.once
def test_on_the_last_receive_a_transient_failure_is_the_items_line(sqs, s3, aws_env) -> None:
    """A source that never comes must not dead-letter its healthy neighbours with it."""
    stack = make_stack(sqs, s3, max_receive=2)
    missing = json.dumps({"bucket": stack.input_bucket, "key": "never/uploaded.csv"})
    send_all(sqs, stack.queue_url, [batch_of([*put_sources(s3, stack, 2), missing])])

    lines, summary = run(worker_env(aws_env, stack))

    # The first receive stored nothing: the second would have found its result already done.
    assert [(e["outcome"], e["attempt"]) for e in lines] == [("failed", 1), ("ok", 2)], lines
    _, stored = stored_batch(s3, stack)
    assert [line.failed for line in stored] == [False, False, True]
    assert "NoSuchKey" in stored[2].error
    # Failed: the 3 items of the first receive, then the one failure line of the second.
    assert (summary["items_ok"], summary["items_failed"]) == (2, 3 + 1)
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    assert queue_depths(sqs, stack.dlq_url) == (0, 0)


@pytest.mark.parametrize("queued_etags", [True, False], ids=["queued-etags", "no-etags"])
def test_a_redelivered_batch_already_stored_is_already_done(
    queued_etags: bool, sqs, s3, aws_env
) -> None:
    """Its receive HEADs the batch's key (and the sources queued without an ETag), no more."""
    stack = make_stack(sqs, s3)
    bodies = put_sources(s3, stack, 3)
    if not queued_etags:
        bodies = [
            json.dumps({k: v for k, v in json.loads(body).items() if k != "etag"})
            for body in bodies
        ]
    body = batch_of(bodies)
    env = worker_env(aws_env, stack)
    send_all(sqs, stack.queue_url, [body])
    run(env)
    stored = output_objects(s3, stack.output_bucket)

    send_all(sqs, stack.queue_url, [body])
    message = receive_when_visible(sqs, stack.queue_url, "the batch sent again")
    sqs.change_message_visibility(
        QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    lines, summary = run(env)

    assert [(e["outcome"], e["attempt"]) for e in lines] == [("already-done", 2)]
    assert summary["items_already_done"] == 3
    calls = summary["calls"]
    assert calls["s3.HeadObject"] == (1 if queued_etags else 1 + 3)
    read_or_written = ("s3.GetObject", "s3.SelectObjectContent", "s3.PutObject")
    assert not [name for name in read_or_written if name in calls], calls
    assert output_objects(s3, stack.output_bucket) == stored
    assert queue_depths(sqs, stack.queue_url) == (0, 0)


@pytest.mark.once
def test_a_batch_has_item_timeout_seconds_for_each_of_its_items(sqs, s3, aws_env) -> None:
    """4 items of 2.5 s outlast one ITEM_TIMEOUT_SECONDS (8 s) but not four: the batch is
    stored on its one receive, its visibility (3 s) extended by the heartbeat until then.
    Each item keeps 5 s of its own timeout spare, for a loaded machine (3 s and 1-s items
    once failed the first item under CI's load)."""
    stack = make_stack(sqs, s3, visibility=3)
    send_all(sqs, stack.queue_url, [batch_of(put_sources(s3, stack, 4))])
    env = worker_env(
        aws_env,
        stack,
        HANDLER="tests.integration.handlers:count_rows",
        TEST_SLEEP_SECONDS="2.5",
        ITEM_TIMEOUT_SECONDS="8",
    )

    lines, _ = run(env)

    outcomes = [(e["outcome"], e["attempt"], e.get("reason")) for e in lines]
    assert outcomes == [("ok", 1, None)]
    assert lines[0]["duration_ms"] > 8000
    _, stored = stored_batch(s3, stack)
    assert [line.result["ids"] for line in stored] == [["0"], ["1"], ["2"], ["3"]]
