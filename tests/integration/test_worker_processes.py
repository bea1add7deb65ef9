"""WORKER_PROCESSES=2: one container, two worker processes, every guarantee kept.

``python -m worker`` runs as the container runs it, against moto's server over HTTP; the
tests check what lands in S3, what stays on the queue, and what each process said.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

from tests.integration.harness import (
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    send_all,
    start_worker,
    wait_until,
    worker_env,
)

COUNT_ROWS = "tests.integration.handlers:count_rows"
WHEN_PEERS_RUN = "tests.integration.gated_handlers:count_rows_when_peers_run"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie only waits to be reaped)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def two_processes(tmp_path: Path, sqs, s3, aws_env, items: int, **settings: str):
    """Seed ``items`` items; start one container of two worker processes on them."""
    stack = make_stack(sqs, s3)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, items))
    marks = tmp_path / "marks"
    marks.mkdir()
    env = worker_env(aws_env, stack, WORKER_PROCESSES="2", TEST_MARK_DIR=str(marks), **settings)
    log = tmp_path / "worker.log"
    return stack, start_worker(env, log), log, marks


def test_two_processes_drain_the_queue_exactly_once(tmp_path: Path, sqs, s3, aws_env) -> None:
    # The first calls return only once 3 have started, more than one process's 2 threads
    # hold: the run goes on only when both processes have taken work.
    stack, supervisor, log, marks = two_processes(
        tmp_path,
        sqs,
        s3,
        aws_env,
        60,
        WORKER_CONCURRENCY="2",
        HANDLER=WHEN_PEERS_RUN,
        TEST_PEERS="3",
    )
    assert supervisor.wait(timeout=240) == 0

    outputs = output_objects(s3, stack.output_bucket)
    results = [json.loads(body) for key, body in outputs.items() if key.startswith("results/")]
    assert sorted(int(result["ids"][0]) for result in results) == list(range(60))
    calls = Counter(path.name.split(".")[0] for path in marks.iterdir())
    assert set(calls.values()) == {1}, "the custom code ran once per item"
    events = log_events(log.read_text())
    assert sorted(e["process"] for e in events if e["event"] == "start") == [0, 1]
    summaries = [e for e in events if e["event"] == "summary"]
    assert len(summaries) == 2
    assert sum(s["ok"] for s in summaries) == 60, "each result must be written exactly once"
    assert all(s["ok"] > 0 for s in summaries), "both processes must share the work"
    # Only process 0 sweeps: the other reads the queue's attributes once, at its start.
    backlog_reads = {s["process"]: s["calls"]["sqs.GetQueueAttributes"] for s in summaries}
    assert backlog_reads[1] == 1
    assert backlog_reads[0] >= 3
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    assert queue_depths(sqs, stack.dlq_url) == (0, 0)


def busy_processes(tmp_path: Path, sqs, s3, aws_env):
    """Start two single-threaded processes on 4 slow items; return once each runs one."""
    # Each item would run for 10 minutes: exiting at all proves none was awaited.
    stack, supervisor, log, marks = two_processes(
        tmp_path,
        sqs,
        s3,
        aws_env,
        4,
        WORKER_CONCURRENCY="1",
        HANDLER=COUNT_ROWS,
        TEST_SLEEP_SECONDS="600",
        STOP_GRACE_SECONDS="1",
    )
    # One thread per process: two items running means both processes hold one.
    wait_until(lambda: len(list(marks.iterdir())) >= 2, "both processes to run an item")
    pids = [e["pid"] for e in log_events(log.read_text(), "start")]
    assert len(pids) == 2
    return stack, supervisor, log, pids


def test_sigterm_stops_both_processes_and_gives_back_their_items(
    tmp_path: Path, sqs, s3, aws_env
) -> None:
    stack, supervisor, log, pids = busy_processes(tmp_path, sqs, s3, aws_env)

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=60) == 0

    assert not any(alive(pid) for pid in pids)
    summaries = log_events(log.read_text(), "summary")
    assert [s["stop_reason"] for s in summaries] == ["SIGTERM", "SIGTERM"]
    released = [
        e for e in log_events(log.read_text(), "released") if e["why"] == "grace period over"
    ]
    assert len(released) == 2, "each process gives back the item it was running"
    assert not [
        key for key in output_objects(s3, stack.output_bucket) if key.startswith("results/")
    ]
    assert queue_depths(sqs, stack.queue_url) == (4, 0), "given back at once, visibility 0"


def test_sigkill_of_the_supervisor_ends_its_processes(tmp_path: Path, sqs, s3, aws_env) -> None:
    # As in a container, where SIGKILL ends every process in it.
    _, supervisor, _, pids = busy_processes(tmp_path, sqs, s3, aws_env)
    supervisor.kill()
    supervisor.wait(timeout=60)
    wait_until(lambda: not any(alive(pid) for pid in pids), "the worker processes to end")
