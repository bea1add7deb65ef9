"""The worker as the container runs it, against a real emulator over HTTP.

Every test starts ``python -m worker`` as a subprocess with only environment variables, as
the Batch job definition does, and checks what a user would check: what landed in S3, what
is left on the queue and the dead-letter queue, and what the worker said.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.harness import (
    Stack,
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    receive_when_visible,
    run_worker,
    send_all,
    start_worker,
    wait_until,
    worker_env,
)

COUNT_ROWS = "tests.integration.handlers:count_rows"
WHEN_GATE_OPENS = "tests.integration.gated_handlers:count_rows_when_gate_opens"
WHEN_PEERS_RUN = "tests.integration.gated_handlers:count_rows_when_peers_run"
WHEN_WINDING_DOWN = "tests.integration.gated_handlers:count_rows_when_worker_winds_down"


def calls_by_id(marks: Path) -> Counter[str]:
    """How many times the custom code ran for each item id."""
    return Counter(path.name.split(".")[0] for path in marks.iterdir())


def test_two_workers_store_every_item_exactly_once(tmp_path: Path, sqs, s3, aws_env) -> None:
    stack = make_stack(sqs, s3)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 200))
    marks = tmp_path / "marks"
    marks.mkdir()
    # The first calls return only once 5 have started: more than one worker's 4 threads hold,
    # so the run goes on only when both workers have taken work, however fast either starts.
    env = worker_env(
        aws_env,
        stack,
        HANDLER=WHEN_PEERS_RUN,
        TEST_MARK_DIR=str(marks),
        TEST_PEERS="5",
        WORKER_CONCURRENCY="4",
        WORKER_PROCESSES="1",
    )
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    workers = [
        start_worker({**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(i)}, log)
        for i, log in enumerate(logs)
    ]
    assert [w.wait(timeout=240) for w in workers] == [0, 0]

    outputs = output_objects(s3, stack.output_bucket)
    assert len(outputs) == 200
    ids = sorted(int(json.loads(body)["ids"][0]) for body in outputs.values())
    assert ids == list(range(200))
    assert all(json.loads(body)["rows"] == 1 for body in outputs.values())
    assert set(calls_by_id(marks).values()) == {1}, "the custom code ran once per item"
    summaries = [log_events(log.read_text(), "summary")[0] for log in logs]
    assert sum(s["ok"] for s in summaries) == 200, "each result must be written exactly once"
    assert all(s["ok"] > 0 for s in summaries), "both array children must share the work"
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    assert queue_depths(sqs, stack.dlq_url) == (0, 0)
    example = s3.head_object(Bucket=stack.output_bucket, Key=next(iter(outputs)))["Metadata"]
    assert example["array-index"] in {"0", "1"}
    assert example["source"].startswith(f"s3://{stack.input_bucket}/src/item%20")


def test_sigterm_gives_back_unfinished_items_and_exits_zero(
    tmp_path: Path, sqs, s3, aws_env
) -> None:
    # The item would run for 10 minutes: exiting at all proves it was not awaited.
    stack, worker, log, env = _worker_busy_with_items(
        tmp_path, sqs, s3, aws_env, items=3, TEST_SLEEP_SECONDS="600", STOP_GRACE_SECONDS="1"
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0

    released = {
        message: e["why"]
        for e in log_events(log.read_text(), "released")
        for message in e["messages"]
    }
    assert "grace period over" in released.values(), "the running item must be given back"
    # One thread holds at most two: the running item and one prefetched. What it did not hold
    # stayed on the queue, so a stop costs it no receive.
    assert 1 <= len(released) <= 2
    assert not output_objects(s3, stack.output_bucket)
    assert queue_depths(sqs, stack.queue_url) == (3, 0), "given back at once, visibility 0"

    finish = run_worker({**env, "TEST_SLEEP_SECONDS": "0"})
    assert finish.returncode == 0, finish.stderr
    assert len(output_objects(s3, stack.output_bucket)) == 3


def test_sigterm_lets_a_running_item_finish_within_the_grace_period(
    tmp_path: Path, sqs, s3, aws_env
) -> None:
    # The item returns only once the worker is winding down: only the grace period saves it.
    stack, worker, log, _ = _worker_busy_with_items(
        tmp_path, sqs, s3, aws_env, items=2, HANDLER=WHEN_WINDING_DOWN, STOP_GRACE_SECONDS="120"
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0

    (item,) = log_events(log.read_text(), "item")
    assert item["outcome"] == "ok" and "given_back_before_settling" not in item
    summary = log_events(log.read_text(), "summary")[0]
    assert (summary["ok"], summary["stop_reason"]) == (1, "SIGTERM")
    assert len(output_objects(s3, stack.output_bucket)) == 1
    assert queue_depths(sqs, stack.queue_url) == (1, 0)


def test_sigkill_mid_item_is_redelivered_and_stored_once(tmp_path: Path, sqs, s3, aws_env) -> None:
    stack = make_stack(sqs, s3, visibility=3)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 1))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = worker_env(
        aws_env, stack, HANDLER=COUNT_ROWS, TEST_MARK_DIR=str(marks), TEST_SLEEP_SECONDS="3"
    )
    worker = start_worker(env, tmp_path / "killed.log")
    _wait_for_marks(marks, 1)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)

    retry = run_worker({**env, "TEST_SLEEP_SECONDS": "0", "IDLE_EXIT_SECONDS": "8"})
    assert retry.returncode == 0, retry.stderr
    item = log_events(retry.stdout, "item")
    assert [(e["outcome"], e["attempt"]) for e in item] == [("ok", 2)]
    assert len(output_objects(s3, stack.output_bucket)) == 1
    assert calls_by_id(marks) == {"0": 2}
    assert queue_depths(sqs, stack.queue_url) == (0, 0)


def test_item_longer_than_visibility_timeout_runs_once(tmp_path: Path, sqs, s3, aws_env) -> None:
    visibility = 6  # the heartbeat extends with half of it (3 s) to spare
    stack = make_stack(sqs, s3, visibility=visibility)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 1))
    marks = tmp_path / "marks"
    marks.mkdir()
    gate = tmp_path / "gate"
    env = worker_env(
        aws_env,
        stack,
        HANDLER=WHEN_GATE_OPENS,
        WORKER_CONCURRENCY="1",
        TEST_MARK_DIR=str(marks),
        TEST_GATE=str(gate),
    )
    workers = [start_worker(env, tmp_path / f"w{i}.log") for i in range(2)]
    _wait_for_marks(marks, 1)
    # Both workers poll the queue while the item runs through two visibility timeouts.
    _wait_out_visibility_timeouts(sqs, visibility, times=2)
    assert calls_by_id(marks) == {"0": 1}, "a heartbeat must keep the item from a second worker"
    assert queue_depths(sqs, stack.queue_url) == (0, 1)
    gate.touch()
    assert [w.wait(timeout=60) for w in workers] == [0, 0]

    assert calls_by_id(marks) == {"0": 1}
    assert len(output_objects(s3, stack.output_bucket)) == 1
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    calls = [log_events((tmp_path / f"w{i}.log").read_text(), "summary")[0] for i in range(2)]
    # Held past twice the timeout from one receive: it was extended at least twice.
    assert any(s["calls"].get("sqs.ChangeMessageVisibilityBatch", 0) >= 2 for s in calls)


def test_s3_event_notifications_feed_the_queue(tmp_path: Path, sqs, s3, aws_env) -> None:
    stack = make_stack(sqs, s3)
    key = "trip data/jan 2018+a.csv"
    s3.put_object(Bucket=stack.input_bucket, Key=key, Body=b"id,value\n7,70\n")
    created = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": stack.input_bucket},
                    "object": {"key": "trip+data/jan+2018%2Ba.csv", "size": 14},
                },
            }
        ]
    }
    removed = json.loads(json.dumps(created))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": stack.input_bucket}
    send_all(sqs, stack.queue_url, [json.dumps(m) for m in (test_event, created, removed)])
    result = run_worker(worker_env(aws_env, stack, HANDLER=COUNT_ROWS))
    assert result.returncode == 0, result.stderr

    (output_key,) = output_objects(s3, stack.output_bucket)
    assert output_key.startswith(f"results/{stack.input_bucket}/{key}.")
    outcomes = sorted(e["outcome"] for e in log_events(result.stdout, "item"))
    assert outcomes == ["ignored", "ignored", "ok"]
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    assert queue_depths(sqs, stack.dlq_url) == (0, 0)


def test_large_output_streams_as_multipart_upload(tmp_path: Path, sqs, s3, aws_env) -> None:
    stack = make_stack(sqs, s3, max_receive=1)
    bodies = put_sources(s3, stack, 1)
    send_all(sqs, stack.queue_url, bodies)
    env = worker_env(aws_env, stack, HANDLER="tests.integration.handlers:large")
    stored = run_worker({**env, "TEST_OUTPUT_MB": "20"})
    assert stored.returncode == 0, stored.stderr
    (body,) = output_objects(s3, stack.output_bucket).values()
    assert len(json.loads(body)["padding"]) == 20 * 1024 * 1024
    summary = log_events(stored.stdout, "summary")[0]
    assert summary["calls"]["s3.UploadPart"] == 3
    assert summary["calls"].get("s3.PutObject", 0) == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"SQS_QUEUE_URL": ""}, "SQS_QUEUE_URL is not set"),
        ({"HANDLER": "no_such_module:run"}, "cannot import no_such_module"),
        ({"S3_QUERY_LIMIT": "ten thousand"}, "S3_QUERY_LIMIT must be"),
    ],
)
def test_misconfiguration_exits_non_zero_with_one_sentence(
    sqs, s3, aws_env, settings: dict[str, str], message: str
) -> None:
    stack = make_stack(sqs, s3)
    result = run_worker(worker_env(aws_env, stack, **settings), timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _worker_busy_with_items(
    tmp_path: Path, sqs, s3, aws_env, items: int, **settings: str
) -> tuple[Stack, subprocess.Popen[bytes], Path, dict[str, str]]:
    """Start one single-threaded worker on ``items`` items; return once the first one runs."""
    stack = make_stack(sqs, s3)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, items))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = worker_env(
        aws_env,
        stack,
        **{"HANDLER": COUNT_ROWS, "WORKER_CONCURRENCY": "1", "TEST_MARK_DIR": str(marks)}
        | settings,
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    _wait_for_marks(marks, 1)
    return stack, worker, log, env


def _wait_for_marks(marks: Path, count: int) -> None:
    wait_until(lambda: len(list(marks.iterdir())) >= count, "the custom code to be called")


def _wait_out_visibility_timeouts(sqs, visibility: int, times: int) -> None:
    """Return once ``times`` visibility timeouts have passed, as SQS itself counts them.

    A probe message on a queue of the same timeout is received, and received again each time
    its visibility lapses: no clock of this machine is trusted.
    """
    probe_queue = sqs.create_queue(
        QueueName=f"clock-{uuid.uuid4().hex[:10]}",
        Attributes={"VisibilityTimeout": str(visibility)},
    )["QueueUrl"]
    sqs.send_message(QueueUrl=probe_queue, MessageBody="tick")
    for receive in range(times + 1):
        receive_when_visible(
            sqs, probe_queue, f"receive {receive + 1} of the probe", timeout=visibility + 60
        )
    sqs.delete_queue(QueueUrl=probe_queue)
