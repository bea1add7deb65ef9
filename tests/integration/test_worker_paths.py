"""The worker's less travelled paths, run as the container runs it, against the emulator.

A redelivered item that is already stored, custom code that hangs in every thread, a failure
retried after RETRY_DELAY_SECONDS, a message naming its own output key, the metadata on each
result, and a queue without a dead-letter queue. Each test waits on what the worker logs or
on the queue's state, never on a clock.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.integration import harness

COUNT_ROWS = "tests.integration.handlers:count_rows"
EXPLODE = "tests.integration.handlers:explode"


def receive_once_and_give_back(sqs: Any, queue_url: str) -> None:
    """Receive the queue's only message and make it visible again, as a vanished worker would.

    The worker's next receive is then the message's second: a redelivery.
    """
    message = harness.receive_when_visible(sqs, queue_url, "the seeded message")
    sqs.change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )


def test_a_redelivered_item_already_stored_is_not_run_again(
    tmp_path: Path, sqs: Any, s3: Any, aws_env: dict[str, str]
) -> None:
    stack = harness.make_stack(sqs, s3)
    bodies = harness.put_sources(s3, stack, 1)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = harness.worker_env(aws_env, stack, HANDLER=COUNT_ROWS, TEST_MARK_DIR=str(marks))
    harness.send_all(sqs, stack.queue_url, bodies)
    first = harness.run_worker(env)
    assert first.returncode == 0, first.stderr
    stored = harness.output_objects(s3, stack.output_bucket)
    assert len(stored) == 1 and len(list(marks.iterdir())) == 1

    # The same message again, as if its first worker vanished between the store and the delete.
    harness.send_all(sqs, stack.queue_url, bodies)
    receive_once_and_give_back(sqs, stack.queue_url)
    again = harness.run_worker(env)
    assert again.returncode == 0, again.stderr

    (item,) = harness.log_events(again.stdout, "item")
    assert (item["outcome"], item["attempt"]) == ("already-done", 2)
    assert item["output"] == f"s3://{stack.output_bucket}/{next(iter(stored))}"
    assert len(list(marks.iterdir())) == 1, "the custom code must not run a second time"
    assert harness.output_objects(s3, stack.output_bucket) == stored
    assert harness.queue_depths(sqs, stack.queue_url) == (0, 0)


def test_custom_code_hung_in_every_thread_exits_3_and_gives_the_item_back(
    sqs: Any, s3: Any, aws_env: dict[str, str]
) -> None:
    stack = harness.make_stack(sqs, s3)
    harness.send_all(sqs, stack.queue_url, harness.put_sources(s3, stack, 1))
    env = harness.worker_env(
        aws_env,
        stack,
        HANDLER=COUNT_ROWS,
        WORKER_CONCURRENCY="1",
        HANDLER_TIMEOUT="1",
        ITEM_TIMEOUT_SECONDS="60",  # the custom code's own limit cuts it, whatever the load
        TEST_SLEEP_SECONDS="600",  # hangs far beyond the harness's timeout
    )
    hung = harness.run_worker(env)

    assert hung.returncode == 3, "Batch's retry strategy starts a fresh container on exit 3"
    (item,) = harness.log_events(hung.stdout, "item")
    assert item["outcome"] == "failed"
    assert "HANDLER_TIMEOUT=1 s" in item["reason"]
    assert harness.log_events(hung.stdout, "stuck"), "the log must say why the worker left"
    assert harness.log_events(hung.stdout, "summary")[0]["exit_code"] == 3
    assert not harness.output_objects(s3, stack.output_bucket)
    assert harness.queue_depths(sqs, stack.queue_url) == (1, 0), "the item is given back, not lost"


def test_a_failed_item_comes_back_only_after_the_retry_delay(
    tmp_path: Path, sqs: Any, s3: Any, aws_env: dict[str, str]
) -> None:
    """Proven on the message itself: invisible once failed, then received a second time only.

    The delay is long enough that no stall of a loaded machine between the failure and the
    first look at the queue could outlast it.
    """
    delay = 20
    stack = harness.make_stack(sqs, s3, max_receive=5)
    s3.put_object(Bucket=stack.input_bucket, Key="poison.csv", Body=b"id,value\n1,boom\n")
    body = json.dumps({"bucket": stack.input_bucket, "key": "poison.csv"})
    harness.send_all(sqs, stack.queue_url, [body])
    env = harness.worker_env(aws_env, stack, HANDLER=EXPLODE, RETRY_DELAY_SECONDS=str(delay))
    log = tmp_path / "worker.log"
    worker = harness.start_worker(env, log)
    failed = harness.wait_for_event(log, "item")
    worker.send_signal(signal.SIGTERM)  # it would otherwise stay for the retry
    assert worker.wait(timeout=60) == 0

    assert (failed["outcome"], failed["attempt"]) == ("failed", 1)
    assert failed["next"] == f"retry in {delay} s"
    assert harness.queue_depths(sqs, stack.queue_url) == (0, 1), "delayed: neither visible nor lost"
    assert sqs.receive_message(QueueUrl=stack.queue_url).get("Messages", []) == []

    message = harness.receive_when_visible(
        sqs, stack.queue_url, "the delayed message to come back", timeout=delay + 60
    )
    assert message["Body"] == body
    assert message["Attributes"]["ApproximateReceiveCount"] == "2", "nobody took it meanwhile"


def test_a_message_with_its_own_output_key_is_stored_there(
    sqs: Any, s3: Any, aws_env: dict[str, str]
) -> None:
    stack = harness.make_stack(sqs, s3)
    (seeded,) = harness.put_sources(s3, stack, 1)
    output_key = "results/chosen by the sender/answer.json"
    message = {**json.loads(seeded), "output_key": output_key}
    harness.send_all(sqs, stack.queue_url, [json.dumps(message)])
    result = harness.run_worker(harness.worker_env(aws_env, stack, HANDLER=COUNT_ROWS))
    assert result.returncode == 0, result.stderr

    assert list(harness.output_objects(s3, stack.output_bucket)) == [output_key]
    (item,) = harness.log_events(result.stdout, "item")
    assert (item["outcome"], item["output"]) == ("ok", f"s3://{stack.output_bucket}/{output_key}")


def test_each_result_carries_the_job_attempt_and_source_it_came_from(
    sqs: Any, s3: Any, aws_env: dict[str, str]
) -> None:
    stack = harness.make_stack(sqs, s3)
    (seeded,) = harness.put_sources(s3, stack, 1)
    harness.send_all(sqs, stack.queue_url, [seeded])
    receive_once_and_give_back(sqs, stack.queue_url)
    env = harness.worker_env(
        aws_env,
        stack,
        HANDLER=COUNT_ROWS,
        AWS_BATCH_JOB_ID="0f5c-job",
        AWS_BATCH_JOB_ARRAY_INDEX="3",
        AWS_BATCH_JOB_ATTEMPT="4",
    )
    result = harness.run_worker(env)
    assert result.returncode == 0, result.stderr

    (key,) = harness.output_objects(s3, stack.output_bucket)
    metadata = s3.head_object(Bucket=stack.output_bucket, Key=key)["Metadata"]
    assert metadata.pop("duration-ms").isdecimal()
    source = json.loads(seeded)
    assert metadata == {
        "source": f"s3://{stack.input_bucket}/src/item%200000.csv",
        "source-etag": source["etag"].strip('"'),
        "job-id": "0f5c-job",
        "array-index": "3",
        "attempt": "2",  # the message's receive count
        "job-attempt": "4",  # Batch's attempt of the container
        "handler": COUNT_ROWS,
    }


def test_a_queue_without_dead_letter_queue_is_warned_about_at_start(
    sqs: Any, s3: Any, aws_env: dict[str, str]
) -> None:
    with_dlq = harness.make_stack(sqs, s3)
    bare_url = sqs.create_queue(QueueName=with_dlq.queue_url.rsplit("/", 1)[1] + "-bare")[
        "QueueUrl"
    ]
    without_dlq = harness.Stack(bare_url, "", with_dlq.input_bucket, with_dlq.output_bucket)

    def warnings(stack: harness.Stack) -> list[str]:
        result = harness.run_worker(harness.worker_env(aws_env, stack, IDLE_EXIT_SECONDS="0"))
        assert result.returncode == 0, result.stderr
        return [e["reason"] for e in harness.log_events(result.stdout, "warning")]

    assert warnings(without_dlq) == ["queue has no dead-letter queue: failing items retry forever"]
    assert warnings(with_dlq) == []
