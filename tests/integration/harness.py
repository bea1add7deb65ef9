"""Helpers for running the worker exactly as the image's CMD does: ``python -m worker``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ResponseStreamingError

from batchspot.aws import create_queue_with_dlq
from batchspot.fleet import worker_env as job_env
from worker.config import DEFAULT_OUTPUT_PREFIX
from worker.limits import MAX_BATCH_ENTRIES, chunked
from worker.manifest import is_run_record
from worker.queue_depth import queue_counts

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stack:
    """A work queue with its DLQ and an input and output bucket, uniquely named."""

    queue_url: str
    dlq_url: str
    input_bucket: str
    output_bucket: str


def make_stack(sqs: Any, s3: Any, visibility: int = 30, max_receive: int = 2) -> Stack:
    """Create a fresh queue pair and buckets, as the Terraform stack would."""
    suffix = uuid.uuid4().hex[:10]
    queue_url, dlq_url = create_queue_with_dlq(sqs, f"work-{suffix}", visibility, max_receive)
    stack = Stack(queue_url, dlq_url, f"in-{suffix}", f"out-{suffix}")
    s3.create_bucket(Bucket=stack.input_bucket)
    s3.create_bucket(Bucket=stack.output_bucket)
    return stack


def put_sources(s3: Any, stack: Stack, count: int, prefix: str = "src/") -> list[str]:
    """Upload ``count`` one-row CSV sources; return one seed message body for each."""
    bodies = []
    for index in range(count):
        key = f"{prefix}item {index:04d}.csv"
        etag = s3.put_object(
            Bucket=stack.input_bucket, Key=key, Body=f"id,value\n{index},{index * 10}\n".encode()
        )["ETag"]
        bodies.append(json.dumps({"bucket": stack.input_bucket, "key": key, "etag": etag}))
    return bodies


def batch_of(bodies: list[str], **fields: Any) -> str:
    """Return one batch message naming the sources of ``bodies`` (per-item seed messages)."""
    return json.dumps({"items": [json.loads(body) for body in bodies], **fields})


def send_all(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    """Send message bodies in batches of 10."""
    for batch in chunked(bodies, MAX_BATCH_ENTRIES):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]


def worker_env(aws_env: dict[str, str], stack: Stack, **settings: str) -> dict[str, str]:
    """The environment of one worker container on ``stack``, quick to leave and to retry."""
    quick = {"IDLE_EXIT_SECONDS": "2", "RETRY_DELAY_SECONDS": "0"}
    return job_env(aws_env, stack.queue_url, stack.output_bucket, **{**quick, **settings})


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m worker`` from the project root, its stdout going to ``log``."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=sink, stderr=sink
        )


def run_worker(
    env: dict[str, str], timeout: float = 120, module: str = "worker"
) -> subprocess.CompletedProcess[str]:
    """Run one worker (or ``module``: ``worker.final``) to completion; return what it printed."""
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def log_events(text: str, event: str | None = None) -> list[dict[str, Any]]:
    """Parse the worker's JSON log lines, optionally only those of one event."""
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [e for e in events if event is None or e["event"] == event]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def wait_for_event(log: Path, event: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the worker writing ``log`` has logged ``event``; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            found = log_events(log.read_text(errors="replace"), event)
            if found:
                return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} event within {timeout} s; log: {log.read_text()[-2000:]}")


def output_objects(s3: Any, bucket: str) -> dict[str, bytes]:
    """Every stored result, by key; not the runs' records (a failure's, a manifest)."""
    objects: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            if is_run_record(entry["Key"], DEFAULT_OUTPUT_PREFIX):
                continue
            objects[entry["Key"]] = read_object(s3, bucket, entry["Key"])
    return objects


def read_object(s3: Any, bucket: str, key: str, attempts: int = 3) -> bytes:
    """Return an object's bytes, read again where the emulator broke off its body.

    LocalStack's S3 now and then closes a GET's connection before the body under the suite's
    load (a CI run: ``IncompleteRead(0 bytes read, 25 more expected)`` on a stored result,
    after the worker had exited 0). botocore's retries end with the response's headers; the
    worker's own reads fail such an item for a retry, and the checks read again likewise.
    """
    for _ in range(attempts - 1):
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ResponseStreamingError:
            continue
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # its error, if any, raised


def queue_depths(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages on a queue."""
    counts = queue_counts(sqs, queue_url)
    return counts.visible, counts.in_flight


def drain(sqs: Any, queue_url: str) -> list[str]:
    """Receive and delete everything visible on a queue; return the bodies."""
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=MAX_BATCH_ENTRIES, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def receive_when_visible(
    sqs: Any, queue_url: str, what: str, timeout: float = 30
) -> dict[str, Any]:
    """Wait until the queue's one message can be received; return it (not deleted).

    Its ``ApproximateReceiveCount`` comes with it, so a test can tell who else had it.
    """
    received: list[dict[str, Any]] = []

    def got_it() -> bool:
        received.extend(
            sqs.receive_message(
                QueueUrl=queue_url,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
        )
        return bool(received)

    wait_until(got_it, what, timeout)
    (message,) = received
    return message
