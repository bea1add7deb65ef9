"""Exactly once, end to end: no run ends with work stranded, stale sources, a bad output bucket.

Each test runs ``python -m worker`` as the image does, against the session's emulator.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.integration.harness import (
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    run_worker,
    send_all,
    start_worker,
    wait_until,
    worker_env,
)
from worker.keys import derive_output_key

COUNT_ROWS = "tests.integration.handlers:count_rows"


def test_a_worker_stays_until_its_delayed_retry_is_dead_lettered(sqs, s3, aws_env) -> None:
    """A failed item given back with RETRY_DELAY_SECONDS must find a taker before all leave.

    Old behaviour: the worker went idle and exited while the item was still delayed, so the
    item was neither stored nor dead-lettered and the array job still ended SUCCEEDED.
    """
    stack = make_stack(sqs, s3, max_receive=2)
    missing = json.dumps({"bucket": stack.input_bucket, "key": "never/uploaded.csv"})
    send_all(sqs, stack.queue_url, [missing])
    env = worker_env(aws_env, stack, RETRY_DELAY_SECONDS="3", IDLE_EXIT_SECONDS="1")

    done = run_worker(env)

    assert done.returncode == 0, done.stderr
    items = log_events(done.stdout, "item")
    assert [(e["attempt"], e["next"]) for e in items] == [
        (1, "retry in 3 s"),
        (2, "dead-letter queue"),
    ]
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    assert queue_depths(sqs, stack.dlq_url) == (1, 0)


def test_the_sweeper_stays_for_items_a_vanished_worker_held(tmp_path: Path, sqs, s3, aws_env):
    """Array child 0 outlasts a SIGKILLed peer's in-flight items; other children leave.

    Old behaviour: every idle child left after IDLE_EXIT_SECONDS, while the killed child's
    messages were still invisible, so they were stranded.
    """
    # 10 s of visibility after the kill: child 1 comes and goes, and child 0 starts, while the
    # items are still invisible, even on a loaded machine.
    stack = make_stack(sqs, s3, visibility=10)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 3))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = worker_env(aws_env, stack, HANDLER=COUNT_ROWS, TEST_MARK_DIR=str(marks))
    doomed_log = tmp_path / "doomed.log"
    doomed = start_worker(
        {**env, "AWS_BATCH_JOB_ARRAY_INDEX": "2", "TEST_SLEEP_SECONDS": "30"}, doomed_log
    )
    wait_until(lambda: len(list(marks.iterdir())) == 3, "the doomed child runs all 3 items")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    assert queue_depths(sqs, stack.queue_url)[1] == 3, "the killed child held every item"

    other = run_worker({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "1", "IDLE_EXIT_SECONDS": "1"})
    sweeper = run_worker({**env, "AWS_BATCH_JOB_ARRAY_INDEX": "0", "IDLE_EXIT_SECONDS": "1"})

    assert other.returncode == 0 and not log_events(other.stdout, "item"), "child 1 left"
    assert sweeper.returncode == 0, sweeper.stderr
    assert log_events(sweeper.stdout, "sweeping"), "child 0 waited for the lapsed items"
    assert sorted(e["attempt"] for e in log_events(sweeper.stdout, "item")) == [2, 2, 2]
    assert len(output_objects(s3, stack.output_bucket)) == 3
    assert queue_depths(sqs, stack.queue_url) == (0, 0)


def test_a_source_overwritten_after_seeding_is_keyed_by_the_version_read(sqs, s3, aws_env):
    """The new version's rows must never sit under the old version's key."""
    stack = make_stack(sqs, s3)
    key = "src/changing.csv"
    old = s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"id\nold\n")["ETag"]
    new = s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"id\nnew\n")["ETag"]
    message = {"bucket": stack.input_bucket, "key": key, "etag": old}
    send_all(sqs, stack.queue_url, [json.dumps(message)])

    done = run_worker(worker_env(aws_env, stack, QUERY_ENGINE="local"))

    assert done.returncode == 0, done.stderr
    outputs = output_objects(s3, stack.output_bucket)
    new_key = derive_output_key("results/", stack.input_bucket, key, new)
    assert list(outputs) == [new_key]
    assert json.loads(outputs[new_key]) == [{"id": "new"}]
    assert log_events(done.stdout, "item")[0]["queued_etag"] == old


def test_a_missing_output_bucket_stops_the_worker_at_start(sqs, s3, aws_env) -> None:
    """One sentence and exit 2, rather than every item failing its way to the DLQ."""
    stack = make_stack(sqs, s3)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 2))

    done = run_worker(worker_env(aws_env, stack, OUTPUT_BUCKET="no-such-bucket-here"))

    assert done.returncode == 2
    assert "OUTPUT_BUCKET 'no-such-bucket-here' does not exist" in done.stderr
    assert queue_depths(sqs, stack.queue_url) == (2, 0), "no item was touched"
