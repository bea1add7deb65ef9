"""``logs --follow`` on moto's Batch and CloudWatch Logs: every line once, in order, until the end.

moto's Batch (without Docker) settles a job inside SubmitJob; with ``MOTO_SIMPLE_BATCH_FAIL_AFTER``
the call first waits that many seconds, and meanwhile the job is listed as running with its log
stream named. That window is the running job: the test feeds its log between the follower's
polls, and lets the follower end only when the job has ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from batchspot.emulators import Emulator, moto_server
from batchspot.logs import DEFAULT_LOG_GROUP, show_logs
from tests.integration.harness import wait_until
from tests.integration.ops_support import make_batch, use_emulator

pytestmark = pytest.mark.moto_only

# How long moto's SubmitJob holds the job running: longer than feeding the log takes.
JOB_SECONDS = 30


@pytest.fixture(scope="module")
def batch_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A private moto server whose Batch jobs run for JOB_SECONDS, then fail."""
    logs = tmp_path_factory.mktemp("logs-follow")
    extra = {"MOTO_SIMPLE_BATCH_FAIL_AFTER": str(JOB_SECONDS)}
    with moto_server(logs, extra_env=extra) as emulator, use_emulator(emulator):
        yield emulator


def start_job(batch: Any, job_queue: str, job_definition: str) -> tuple[str, threading.Thread]:
    """Submit a job in the background; return its id once moto lists it, and the submitter."""
    submitter = threading.Thread(
        target=batch.submit_job,
        kwargs={"jobName": "follow", "jobQueue": job_queue, "jobDefinition": job_definition},
    )
    submitter.start()
    listed: list[str] = []

    def is_listed() -> bool:
        listed.extend(j["jobId"] for j in batch.list_jobs(jobQueue=job_queue)["jobSummaryList"])
        return bool(listed)

    wait_until(is_listed, "the submitted job to be listed")
    return listed[0], submitter


def test_follow_prints_each_line_once_in_order_and_ends_with_the_job(
    batch_emulator: Emulator,
) -> None:
    batch, logs = boto3.client("batch"), boto3.client("logs")
    stack = make_batch("follow")
    job_id, submitter = start_job(batch, stack.job_queue, stack.job_definition)
    (job,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert job["status"] not in {"SUCCEEDED", "FAILED"}
    stream = job["container"]["logStreamName"]
    logs.create_log_group(logGroupName=DEFAULT_LOG_GROUP)
    logs.create_log_stream(logGroupName=DEFAULT_LOG_GROUP, logStreamName=stream)

    now = int(time.time() * 1000)
    # Lines sharing a millisecond across polls: the follower re-reads from the newest one seen.
    batches = [
        [(now, "line 1"), (now + 1, "line 2")],
        [(now + 1, "line 3"), (now + 2, "line 4")],
        [(now + 2, "line 5")],
    ]
    pauses: list[float] = []

    def feed_between_polls(interval: float) -> None:
        pauses.append(interval)
        if batches:
            events = [{"timestamp": t, "message": m} for t, m in batches.pop(0)]
            logs.put_log_events(
                logGroupName=DEFAULT_LOG_GROUP, logStreamName=stream, logEvents=events
            )
        else:
            submitter.join(timeout=JOB_SECONDS + 60)  # the job ends: moto marks it failed
            assert not submitter.is_alive()

    printed: list[str] = []
    count = show_logs(
        batch, logs, job_id=job_id, follow=True, emit=printed.append, sleep=feed_between_polls
    )

    assert [line.split(f"[{job_id}] ", 1)[1] for line in printed] == [
        f"line {n}" for n in range(1, 6)
    ]
    assert count == 5
    assert len(pauses) == 4, "three pauses fed the log, the fourth waited for the job's end"
    (ended,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert ended["status"] == "FAILED"
