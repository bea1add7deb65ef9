"""Show a job's CloudWatch Logs: every child of an array job, or one child by index.

Batch names each attempt's log stream in the job description, so the streams are looked up
rather than guessed; in follow mode they are looked up again on every poll, because a child's
stream only exists once that child starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchspot.jobs import tally, with_children
from batchspot.status import DONE_STATUSES
from worker.limits import MAX_DESCRIBE_IDS, chunked

DEFAULT_LOG_GROUP = "/aws/batch/job"


@dataclass(frozen=True)
class Streams:
    """The log streams of a job, each labelled with the child it belongs to."""

    labels: dict[str, str]  # stream name -> "child 3", or the job id for a single job
    finished: bool
    children: list[dict[str, Any]]  # as DescribeJobs gave them: status and reasons


def job_streams(batch: Any, job_id: str, index: int | None = None) -> Streams:
    """Find the log streams of ``job_id`` (all children) or of its child ``index``."""
    _, children = with_children(batch, f"{job_id}:{index}" if index is not None else job_id)
    # Every child ended: a parent's own status may lag (moto's server leaves it SUBMITTED).
    ended = all(child["status"] in DONE_STATUSES for child in children)
    return Streams(labels=stream_labels(children), finished=ended, children=children)


def stream_labels(children: list[dict[str, Any]]) -> dict[str, str]:
    """Label the log stream of each attempt of each described job: ``child 3``, or its id."""
    labels: dict[str, str] = {}
    for child in children:
        parent, _, child_index = child["jobId"].rpartition(":")  # children are "<job>:<index>"
        label = f"child {child_index}" if parent else child["jobId"]
        names = [a.get("container", {}).get("logStreamName") for a in child.get("attempts", [])]
        names.append(child.get("container", {}).get("logStreamName"))
        labels.update({name: label for name in names if name})
    return labels


def fetch_events(
    logs: Any, log_group: str, streams: list[str], start_ms: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the events of ``streams`` from ``start_ms`` on, oldest first."""
    if not streams:  # no child has started yet
        return
    events: list[dict[str, Any]] = []
    paginator = logs.get_paginator("filter_log_events")
    for names in chunked(streams, MAX_DESCRIBE_IDS):
        request: dict[str, Any] = {"logGroupName": log_group, "logStreamNames": names}
        if start_ms is not None:
            request["startTime"] = start_ms
        try:
            for page in paginator.paginate(**request):
                events += page.get("events", [])
        except logs.exceptions.ResourceNotFoundException:
            raise LookupError(
                f"log group {log_group!r}, or a log stream of the job, does not exist (yet)"
            ) from None
    yield from sorted(events, key=lambda e: (e["timestamp"], e["eventId"]))


def format_event(event: dict[str, Any], label: str) -> str:
    """Return ``<UTC time> [<child>] <message>``."""
    moment = datetime.fromtimestamp(event["timestamp"] / 1000, tz=UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S} [{label}] {event['message'].rstrip()}"


def show_logs(
    batch: Any,
    logs: Any,
    *,
    job_id: str,
    log_group: str = DEFAULT_LOG_GROUP,
    index: int | None = None,
    follow: bool = False,
    interval: float = 5.0,
    emit: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the job's log lines; with ``follow``, keep polling until the job has ended.

    Returns the number of lines printed. Follow mode re-reads from the newest timestamp seen
    and drops the events of that millisecond it already printed.
    """
    printed = 0
    start_ms: int | None = None
    printed_at_start: set[str] = set()  # ids of printed events stamped start_ms
    while True:
        streams = job_streams(batch, job_id, index)
        for event in fetch_events(logs, log_group, sorted(streams.labels), start_ms):
            if event["eventId"] in printed_at_start:
                continue
            if event["timestamp"] != start_ms:
                start_ms, printed_at_start = event["timestamp"], set()
            printed_at_start.add(event["eventId"])
            emit(format_event(event, streams.labels.get(event.get("logStreamName", ""), "?")))
            printed += 1
        if not printed and (not follow or streams.finished):
            emit(
                nothing_logged(job_id if index is None else f"{job_id}:{index}", streams, log_group)
            )
        if not follow or streams.finished:
            return printed
        sleep(interval)


def nothing_logged(target: str, streams: Streams, log_group: str) -> str:
    """Say why a job printed no log line, and what Batch says of its children."""
    why = (
        f"its {len(streams.labels)} log stream(s) in {log_group} hold none"
        if streams.labels
        else "Batch names no log stream for its children (it does when a container starts)"
    )
    return "\n".join(
        [f"no log lines for job {target}: {why}; their status:", *tally(streams.children)]
    )
