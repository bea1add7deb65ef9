"""Where a run stands: queue depths, dead letters, the array job's children and its items.

SQS counts are approximate and lag by up to a minute; they are what AWS offers without
receiving messages, and they are enough to see a run drain. ``watch`` turns successive
snapshots into progress: a bar whose ETA comes from the rate the queue drains on a terminal,
a line every few seconds elsewhere (``batchspot.progress``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchspot import jobs, queued_items
from batchspot.progress import Progress
from batchspot.results import run_of
from worker.config import DEFAULT_OUTPUT_PREFIX
from worker.manifest import Counts, count_run
from worker.queue_depth import QueueCounts, held_items, queue_counts

DONE_STATUSES = frozenset({"SUCCEEDED", "FAILED"})
CHILD_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


@dataclass(frozen=True)
class JobProgress:
    """A Batch job's own status and, for an array job, its children counted by status."""

    job_id: str
    name: str
    status: str
    size: int
    children: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the job has ended: its own status, or, for an array job, every child's.

        The children decide on their own: a parent's status may lag theirs (moto's server
        leaves it SUBMITTED), and nothing more happens once every child has ended.
        """
        ended = sum(self.children.get(status, 0) for status in DONE_STATUSES)
        return self.status in DONE_STATUSES or (bool(self.children) and ended >= self.size)

    def render(self) -> str:
        """Return one line: status and children per status."""
        line = f"job {self.name} {self.job_id}: {self.status}"
        if self.children:
            counts = ", ".join(f"{s} {n}" for s, n in self.children.items() if n)
            line += f"; {self.size} children: {counts or 'none reported yet'}"
        return line


@dataclass(frozen=True)
class Snapshot:
    """Everything ``invoke status`` shows, read at one moment."""

    queue: QueueCounts
    dead_letters: QueueCounts | None
    job: JobProgress | None
    items: Counts | None = None
    # Items a message of the queue names, as this machine's seeds recorded
    # (``batchspot.queued_items``); SQS counts messages, and a batch message names many items.
    items_per_message: float = 1.0

    def render(self) -> str:
        """Return the status as a few lines of text."""
        queue = self.queue
        lines = [
            f"queue: {queue.visible} visible, {queue.in_flight} in flight"
            + held_items(queue.total, self.items_per_message)
        ]
        if self.dead_letters is not None:
            lines.append(
                f"dead-letter queue: {self.dead_letters.total} message(s)"
                + held_items(self.dead_letters.total, self.items_per_message)
            )
        lines.append(self.job.render() if self.job else "job: none found")
        if self.items is not None:
            lines.append(f"items: {self.items.render(self.items_per_message)}")
        return "\n".join(lines)


def job_progress(batch: Any, job_id: str) -> JobProgress:
    """Describe one job; for an array job, read its children's status summary."""
    job = jobs.one(batch, job_id)
    array = job.get("arrayProperties", {})
    summary = array.get("statusSummary", {})
    return JobProgress(
        job_id=job["jobId"],
        name=job["jobName"],
        status=job["status"],
        size=array.get("size", 1),
        children={status: summary.get(status, 0) for status in CHILD_STATUSES} if array else {},
    )


def latest_job(batch: Any, job_queue: str, job_name: str) -> str | None:
    """Return the id of the newest job named ``job_name`` on ``job_queue``, if any.

    A name filter makes ListJobs return jobs in every status, not only RUNNING ones.
    """
    paginator = batch.get_paginator("list_jobs")
    pages = paginator.paginate(
        jobQueue=job_queue, filters=[{"name": "JOB_NAME", "values": [job_name]}]
    )
    # Children ("<parent>:<index>") are not separate submissions.
    named = [j for page in pages for j in page["jobSummaryList"] if ":" not in j["jobId"]]
    return max(named, key=lambda j: j["createdAt"])["jobId"] if named else None


def snapshot(
    sqs: Any,
    batch: Any,
    *,
    queue_url: str,
    dlq_url: str | None,
    job_id: str | None,
    s3: Any = None,
    output_bucket: str | None = None,
    output_prefix: str = DEFAULT_OUTPUT_PREFIX,
    state_dir: Path | None = None,
) -> Snapshot:
    """Read queue, dead-letter queue and job once; with ``s3``, count the run's items too.

    The items are counted as ``invoke results`` counts them for the manifest
    (``worker.manifest.count_run``), without writing it. The queues' messages are turned into
    items with the ratio the seeds from ``state_dir`` recorded for the work queue (dead letters
    are its messages too).
    """
    items = None
    if job_id and s3 is not None and output_bucket:
        run = run_of(
            batch,
            job_id=job_id,
            bucket=output_bucket,
            output_prefix=output_prefix,
            queue_url=queue_url,
        )
        items = count_run(s3, sqs, run)
    return Snapshot(
        queue=queue_counts(sqs, queue_url),
        dead_letters=queue_counts(sqs, dlq_url) if dlq_url else None,
        job=job_progress(batch, job_id) if job_id else None,
        items=items,
        items_per_message=queued_items.items_per_message(queue_url, state_dir),
    )


def is_complete(state: Snapshot) -> bool:
    """Return whether the job has ended (or, with no job, whether the queue is empty)."""
    return state.job.finished if state.job else state.queue.total == 0


def watch(
    read: Callable[[], Snapshot],
    interval: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Snapshot:
    """Redraw a progress bar from ``read()`` every ``interval`` seconds until complete.

    The bar counts messages deleted since the watch began; its total grows if more are
    seeded meanwhile. Messages moved to the dead-letter queue count as done (shown apart).
    """
    state = read()
    total = state.queue.total
    with Progress(total=total, unit="msg", desc="done") as progress:
        while True:
            total = max(total, progress.done + state.queue.total)
            done = max(progress.done, total - state.queue.total)
            progress.show(done, total, _postfix(state))
            if is_complete(state):
                return state
            sleep(interval)
            state = read()


def _postfix(state: Snapshot) -> str:
    parts = [f"in flight {state.queue.in_flight}"]
    if state.dead_letters is not None:
        parts.append(f"DLQ {state.dead_letters.total}")
    if state.job:
        running = state.job.children.get("RUNNING", 0) if state.job.children else None
        parts.append(state.job.status if running is None else f"children running {running}")
    return ", ".join(parts)
