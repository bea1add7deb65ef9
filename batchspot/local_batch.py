"""``invoke local --containers``: the array job run by moto's Batch as containers of the image.

The AWS path on one machine: the image is built as ``invoke build`` builds it, the stack's job
definition names it, ``invoke submit``'s own code submits the array job and its final job, and
moto's Batch runs every child, then the final job, as a container of that image on this
machine's Docker engine (on the host's network, so the containers reach moto on 127.0.0.1).
The children's logs are read back from CloudWatch Logs once, as ``invoke logs`` reads them,
for their summaries and for the run's report alike.

Where moto's Batch (5.2) differs from AWS Batch, and what stands in for it here:

* no retry strategy: a failed child is never retried (the Batch rules model in the chaos run
  decides retries from the rendered job definition instead);
* no memory or CPU limits, and none of ``readonlyRootFilesystem``, ``user`` or
  ``initProcessEnabled``: the container tests run the image with the job definition's figures
  applied by hand;
* no ``AWS_BATCH_JOB_ARRAY_INDEX``: every child acts as the sweeper (process 0 of child 0),
  which only makes each one wait for the queue to be done;
* its ECR hosts no registry, so the job definition names the image built here, not a push;
* a described job carries no ``container.exitCode``: the child's status stands in for it;
* logs go to ``/aws/batch/job`` whatever the job definition's ``awslogs-group`` says, and only
  once a container has exited;
* the array job's own status moves only when the job is described, and the final job waits on
  that status, so the wait below describes it on every poll; an array job with a failed child
  stays SUBMITTED for good, so the wait ends on the children's states, and a final job that
  can then never start is terminated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchspot import image
from batchspot.jobs import describe, with_children
from batchspot.logs import DEFAULT_LOG_GROUP, fetch_events, stream_labels
from batchspot.report import RunLog, from_events
from batchspot.status import DONE_STATUSES
from batchspot.submit import FinalStep, submit, worker_overrides
from worker.logs import records

# moto's Batch writes every job's log here (see the module's docstring).
MOTO_LOG_GROUP = DEFAULT_LOG_GROUP
FINAL_JOB_SECONDS = 300  # the manifest of a few thousand items takes seconds


class ContainerRunError(RuntimeError):
    """The containerised run could not finish; the text says why."""


@dataclass
class ArrayRun:
    """What moto's Batch did with the array job and its final job."""

    job_id: str
    image: str
    children: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    # The children's CloudWatch Logs events, fetched once for the summaries and the report.
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summaries(self) -> list[dict[str, Any]]:
        """The ``summary`` lines the children's worker processes logged."""
        messages = (event["message"] for event in self.events)
        return [line for line in records(messages) if line.get("event") == "summary"]

    def log(self) -> RunLog:
        """Return the children's logs as ``invoke report`` reads them, from the events fetched."""
        return from_events(self.job_id, stream_labels(self.children), self.events)

    @property
    def exit_codes(self) -> list[int]:
        """Each child's container exit code: AWS's, else 0 for SUCCEEDED and -1 otherwise."""
        return [
            c.get("container", {}).get("exitCode", 0 if c["status"] == "SUCCEEDED" else -1)
            for c in self.children
        ]

    def describe(self) -> str:
        """One line: how the children and the final job ended, and in what."""
        ended = ", ".join(
            f"{status} {sum(c['status'] == status for c in self.children)}"
            for status in sorted({c["status"] for c in self.children})
        )
        final = self.final["status"] if self.final else "not run"
        return (
            f"{len(self.children)} children ran as containers of {self.image} ({ended}); "
            f"final job {final}"
        )


def run_array_job(
    batch: Any,
    logs: Any,
    ecr: Any,
    *,
    outputs: Mapping[str, Any],
    container_env: Mapping[str, str],
    size: int,
    job_name: str,
    image_name: str,
    progress: Callable[[], None],
    timeout: float,
) -> ArrayRun:
    """Submit ``size`` children plus the final job; wait for them; fetch the children's logs.

    ``container_env`` is added to the job definition's environment, as ``invoke submit --env``
    adds it; ``progress`` is called on every poll.
    """
    job_definition = outputs["job_definition"]
    submitted = submit(
        batch,
        job_queue=outputs["job_queue"],
        job_definition=job_definition,
        size=size,
        env=worker_overrides(batch, ecr, job_definition, dict(container_env)),
        job_name=job_name,
        final=FinalStep(outputs["final_job_definition"]),
    )
    run = ArrayRun(job_id=submitted.job_id, image=image_name)
    deadline = time.monotonic() + timeout
    run.children = _wait(batch, submitted.job_id, progress, deadline)
    if submitted.final_job_id:
        run.final = _final_job(batch, submitted.final_job_id, run.children, progress)
    streams = sorted(stream_labels(run.children))
    run.events = list(fetch_events(logs, MOTO_LOG_GROUP, streams))
    return run


def _wait(
    batch: Any, job_id: str, progress: Callable[[], None], deadline: float
) -> list[dict[str, Any]]:
    """Poll until every child has ended (the parent may never say so on moto)."""
    while True:
        _, children = with_children(batch, job_id)  # describing the parent moves its status
        progress()
        if all(child["status"] in DONE_STATUSES for child in children):
            return children
        if time.monotonic() > deadline:
            states = ", ".join(sorted(child["status"] for child in children))
            raise ContainerRunError(f"the array job's children did not end in time: {states}")
        time.sleep(1)


def _final_job(
    batch: Any, final_id: str, children: list[dict[str, Any]], progress: Callable[[], None]
) -> dict[str, Any]:
    """Wait for the final job; terminate it where moto would keep it waiting forever."""
    if any(child["status"] != "SUCCEEDED" for child in children):
        batch.terminate_job(jobId=final_id, reason="a child failed: moto never starts it")
    deadline = time.monotonic() + FINAL_JOB_SECONDS
    while True:
        (job,) = describe(batch, [final_id])
        progress()
        if job["status"] in DONE_STATUSES:
            return job
        if time.monotonic() > deadline:
            raise ContainerRunError(f"the final job {final_id} did not end: {job['status']}")
        time.sleep(1)


def remove_containers(image_name: str) -> int:
    """Remove the exited containers moto left of ``image_name`` (it never removes them)."""
    client = image.engine()
    removed = 0
    for container in client.containers.list(
        all=True, filters={"ancestor": image_name, "status": "exited"}
    ):
        container.remove()
        removed += 1
    return removed
