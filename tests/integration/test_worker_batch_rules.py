"""How a worker child ends, judged by AWS Batch's rules for the job definition Terraform renders.

A child that ends in a way Batch does not retry is gone for good, with its share of the queue
(and, for array child 0, the sweep). Batch's decisions come from :mod:`batchspot.batchrules`,
whose own tests cite AWS's documentation; the Spot notice comes from a local IMDSv2
(``batchspot_support.imds``), as on EC2 (EC2 user guide, "Spot Instance interruption
notices": two minutes' warning on ``spot/instance-action``). ECS does not drain standalone
tasks, which Batch jobs are, so no SIGTERM follows the notice (ECS developer guide, "Spot
Instance draining" applies to services only): the worker's own watch is all it gets.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from batchspot.batchrules import BatchRules, ChildEnd
from batchspot_support.imds import InstanceMetadata
from tests.integration.handlers import __name__ as handlers_module
from tests.integration.harness import (
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    run_worker,
    send_all,
    start_worker,
    wait_for_event,
    wait_until,
    worker_env,
)
from worker.stopping import notice_time

COUNT_ROWS = f"{handlers_module}:count_rows"


def _busy_worker_env(
    tmp_path: Path, sqs: Any, s3: Any, aws_env: dict[str, str], items: int, **settings: str
) -> tuple[Any, dict[str, str], Path]:
    """A stack with ``items`` items queued and one single-threaded worker's environment."""
    stack = make_stack(sqs, s3)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, items))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = worker_env(
        aws_env,
        stack,
        HANDLER=COUNT_ROWS,
        WORKER_CONCURRENCY="1",
        TEST_MARK_DIR=str(marks),
        **settings,
    )
    return stack, env, marks


def _spot_env(env: dict[str, str], imds: InstanceMetadata) -> dict[str, str]:
    spot = {
        **env,
        "SPOT_NOTICE_INTERVAL": "0.2",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint("host-1"),
    }
    spot.pop("AWS_EC2_METADATA_DISABLED")
    return spot


def _released(log: Path) -> list[tuple[str, float]]:
    """Each give-back's reason and time (epoch seconds), in order."""
    return [(e["why"], e["ts"]) for e in log_events(log.read_text(), "released")]


def _reclaim_mid_item(env: dict[str, str], marks: Path, log: Path, seconds: float) -> None:
    """Run a worker whose host gets notice ``seconds`` ahead once an item runs; take the host
    (SIGKILL) once the worker waits for it, as Spot does at the end of the warning."""
    with InstanceMetadata() as imds:
        worker = start_worker(_spot_env(env, imds), log)
        wait_until(lambda: any(marks.iterdir()), "an item runs")
        imds.notify("host-1", seconds=seconds)
        wait_for_event(log, "waiting-for-host")
        stayed = worker.poll() is None
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert stayed, "the child must stay until its host goes"
    assert imds.token_requests >= 1, "IMDSv2: a session token must be fetched first"


def test_after_a_spot_notice_the_running_item_finishes_and_the_prefetched_go_back_at_once(
    tmp_path: Path, sqs: Any, s3: Any, aws_env: dict[str, str], batch_rules: BatchRules
) -> None:
    """Spot's notice comes two minutes ahead (EC2 user guide, "Spot Instance interruption
    notices"): a running item finishes in them and costs no receive, whatever
    STOP_GRACE_SECONDS (SIGTERM's) says. The prefetched one goes back at once for other
    hosts. Then the child stays: exit 0 would be SUCCEEDED, never retried, the slot and its
    sweep lost for good."""
    stack, env, marks = _busy_worker_env(
        tmp_path, sqs, s3, aws_env, 3, TEST_SLEEP_SECONDS="2", STOP_GRACE_SECONDS="0.5"
    )
    log = tmp_path / "worker.log"
    _reclaim_mid_item(env, marks, log, seconds=120)

    stopping = log_events(log.read_text(), "stopping")[0]
    assert "spot interruption notice" in stopping["reason"]
    (item,) = log_events(log.read_text(), "item")
    assert item["outcome"] == "ok" and "given_back_before_settling" not in item
    assert len(output_objects(s3, stack.output_bucket)) == 1
    (released,) = _released(log)
    assert released[0] == "not started" and released[1] < item["ts"], "prefetched: at once"
    assert queue_depths(sqs, stack.queue_url) == (2, 0), "the finished item deleted"
    end = ChildEnd.host_terminated("i-0123456789abcdef0")
    assert batch_rules.decide(end, attempt=1) == "RETRY"


def test_an_item_that_cannot_finish_before_the_host_goes_is_given_back_ahead_of_the_notice_time(
    tmp_path: Path, sqs: Any, s3: Any, aws_env: dict[str, str]
) -> None:
    """The warning is read from the notice's time, not assumed to be two minutes: a short one
    (as a chaos run's) gives a running item until a quarter of it is left, then the item goes
    back while the host still stands, so no receive waits out a visibility timeout."""
    stack, env, marks = _busy_worker_env(tmp_path, sqs, s3, aws_env, 1, TEST_SLEEP_SECONDS="30")
    log = tmp_path / "worker.log"
    _reclaim_mid_item(env, marks, log, seconds=4)

    notice = json.loads(log_events(log.read_text(), "stopping")[0]["reason"].split(": ", 1)[1])
    host_leaves_at = notice_time(notice)
    assert [why for why, _ in _released(log)] == ["host leaving"]
    assert _released(log)[0][1] < host_leaves_at, "given back before the host goes"
    assert not log_events(log.read_text(), "item")
    assert queue_depths(sqs, stack.queue_url) == (1, 0)


def test_a_host_still_there_after_its_notice_ends_the_child_for_a_retry(
    tmp_path: Path, sqs: Any, s3: Any, aws_env: dict[str, str], batch_rules: BatchRules
) -> None:
    """A notice whose time is long past (an interruption that stopped rather than ended the
    host, or was withdrawn): the child leaves with the code the strategy retries. Batch may
    place a child on a host already given its notice: it takes no work, so its start costs
    no message a receive."""
    stack, env, _ = _busy_worker_env(tmp_path, sqs, s3, aws_env, 2, TEST_SLEEP_SECONDS="3")
    with InstanceMetadata() as imds:
        imds.notify("host-1", seconds=-600)
        result = run_worker(_spot_env(env, imds), timeout=60)

    assert batch_rules.decide(ChildEnd.exited(result.returncode), attempt=1) == "RETRY"
    assert log_events(result.stdout, "host-still-here")
    assert "sqs.ReceiveMessage" not in log_events(result.stdout, "summary")[0]["calls"]
    assert queue_depths(sqs, stack.queue_url) == (2, 0), "nothing held, nothing lost"


def test_a_child_leaves_before_its_attempt_timeout_and_is_retried_while_work_is_left(
    tmp_path: Path, sqs: Any, s3: Any, aws_env: dict[str, str], batch_rules: BatchRules
) -> None:
    """Batch never retries an attempt it stops at its timeout (user guide, "Job timeouts"):
    the worker stops taking work in time to finish the item it holds, and leaves to be
    retried with a fresh clock. JOB_TIMEOUT_SECONDS 71 with ITEM_TIMEOUT_SECONDS 10 leaves a
    second of work after the item deadline and the 60 s margin (a 10 s item deadline, so a
    loaded machine still finishes the item it holds)."""
    stack, env, _ = _busy_worker_env(
        tmp_path,
        sqs,
        s3,
        aws_env,
        5,
        TEST_SLEEP_SECONDS="0.6",
        ITEM_TIMEOUT_SECONDS="10",
        JOB_TIMEOUT_SECONDS="71",
    )
    result = run_worker(env, timeout=60)

    assert batch_rules.decide(ChildEnd.exited(result.returncode), attempt=1) == "RETRY"
    items = log_events(result.stdout, "item")
    assert 1 <= len(items) < 5 and {item["outcome"] for item in items} == {"ok"}
    assert "attempt time limit" in log_events(result.stdout, "stopping")[0]["reason"]
    assert queue_depths(sqs, stack.queue_url) == (5 - len(items), 0), "the rest given back"


def test_a_missing_queue_is_a_configuration_error_not_retried(
    sqs: Any, s3: Any, aws_env: dict[str, str], batch_rules: BatchRules
) -> None:
    stack = make_stack(sqs, s3)
    sqs.delete_queue(QueueUrl=stack.queue_url)
    result = run_worker(worker_env(aws_env, stack), timeout=60)

    assert batch_rules.decide(ChildEnd.exited(result.returncode), attempt=1) == "FAILED"
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"worker: configuration error: SQS_QUEUE_URL {stack.queue_url!r} names no queue"
    ]


def test_an_unreachable_endpoint_at_start_is_retried(
    sqs: Any, s3: Any, aws_env: dict[str, str], batch_rules: BatchRules
) -> None:
    """Connection refused: botocore's own retries (AWS_MAX_ATTEMPTS), then exit 75."""
    stack = make_stack(sqs, s3)
    unreachable = {**aws_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "2"}
    for name in [name for name in unreachable if name.startswith("AWS_ENDPOINT_URL_")]:
        unreachable.pop(name)
    result = run_worker(worker_env(unreachable, stack), timeout=60)

    assert batch_rules.decide(ChildEnd.exited(result.returncode), attempt=1) == "RETRY"
    assert len(result.stderr.strip().splitlines()) == 1
    assert "could not start, to be retried" in result.stderr
