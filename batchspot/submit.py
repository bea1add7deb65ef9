"""Submit the workers: one AWS Batch array job whose children drain the queue.

The children are interchangeable (each one drains the same queue until it stays empty), so
the only decision is how many to start. ``auto`` starts one per ``per_worker`` queued messages,
never more than the compute environments can run at once: extra children would only wait in
RUNNABLE and then find the queue empty.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from batchspot.aws import queue_counts

MAX_ARRAY_SIZE = 10_000  # AWS Batch's limit on array children
DEFAULT_PER_WORKER = 100  # messages per child for --size auto


class SubmitError(ValueError):
    """The job cannot be submitted as asked; the text says why."""


@dataclass(frozen=True)
class Submitted:
    """A submitted job and how to follow it."""

    job_id: str
    job_name: str
    size: int

    def summary(self) -> str:
        """Return the job id and the commands that watch it."""
        shape = f"array job of {self.size} children" if self.size > 1 else "single job"
        return (
            f"submitted {self.job_name} ({shape}): {self.job_id}\n"
            f"watch it:  invoke status --job-id {self.job_id} --watch\n"
            f"its logs:  invoke logs --job-id {self.job_id} --follow"
        )


def parse_env(pairs: list[str]) -> dict[str, str]:
    """Parse ``KEY=VAL`` strings (the value may contain ``=``) into a mapping."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SubmitError(f"--env wants KEY=VALUE with a valid variable name, got {pair!r}")
        env[name] = value
    return env


def auto_size(queued: int, per_worker: int, max_vcpus: int, vcpus_per_child: float) -> int:
    """One child per ``per_worker`` messages, capped by what fits in the compute environment."""
    if per_worker < 1:
        raise SubmitError(f"per_worker must be at least 1, got {per_worker}")
    wanted = math.ceil(queued / per_worker)
    fits = max(1, int(max_vcpus // vcpus_per_child))
    return max(1, min(wanted, fits, MAX_ARRAY_SIZE))


def capacity_vcpus(batch: Any, job_queue: str) -> int:
    """Sum of maxvCpus over the compute environments the job queue feeds."""
    queue = batch.describe_job_queues(jobQueues=[job_queue])["jobQueues"]
    if not queue:
        raise SubmitError(f"job queue {job_queue!r} not found")
    arns = [entry["computeEnvironment"] for entry in queue[0]["computeEnvironmentOrder"]]
    environments = batch.describe_compute_environments(computeEnvironments=arns)
    return sum(
        env.get("computeResources", {}).get("maxvCpus", 0)
        for env in environments["computeEnvironments"]
    )


def vcpus_per_child(batch: Any, job_definition: str) -> float:
    """Return the vCPUs one child asks for in the job definition (1 if it does not say)."""
    name, _, revision = job_definition.rpartition(":")
    if not name or not revision.isdigit():  # a bare name: the latest active revision
        definitions = batch.describe_job_definitions(
            jobDefinitionName=job_definition, status="ACTIVE"
        )["jobDefinitions"]
    else:
        definitions = batch.describe_job_definitions(jobDefinitions=[job_definition])[
            "jobDefinitions"
        ]
    if not definitions:
        raise SubmitError(f"job definition {job_definition!r} not found")
    container = max(definitions, key=lambda d: d["revision"]).get("containerProperties", {})
    for requirement in container.get("resourceRequirements", []):
        if requirement["type"] == "VCPU":
            return float(requirement["value"])
    return float(container.get("vcpus", 1))


def resolve_size(
    size: str,
    *,
    sqs: Any,
    batch: Any,
    queue_url: str,
    job_queue: str,
    job_definition: str,
    per_worker: int = DEFAULT_PER_WORKER,
) -> int:
    """Turn ``--size`` (a number or ``auto``) into a number of children."""
    if size != "auto":
        if not size.isdigit() or not 1 <= int(size) <= MAX_ARRAY_SIZE:
            raise SubmitError(f"--size must be auto or 1..{MAX_ARRAY_SIZE}, got {size!r}")
        return int(size)
    queued = queue_counts(sqs, queue_url).visible
    if queued == 0:
        raise SubmitError("the work queue is empty: seed it first (invoke seed)")
    return auto_size(
        queued,
        per_worker,
        capacity_vcpus(batch, job_queue),
        vcpus_per_child(batch, job_definition),
    )


def submit(
    batch: Any,
    *,
    job_queue: str,
    job_definition: str,
    size: int,
    env: dict[str, str] | None = None,
    job_name: str = "batchspot",
) -> Submitted:
    """Submit ``size`` children: an array job from 2, a plain job for 1 (Batch's rule)."""
    request: dict[str, Any] = {
        "jobName": job_name,
        "jobQueue": job_queue,
        "jobDefinition": job_definition,
    }
    if size > 1:
        request["arrayProperties"] = {"size": size}
    if env:
        request["containerOverrides"] = {
            "environment": [{"name": name, "value": value} for name, value in env.items()]
        }
    response = batch.submit_job(**request)
    return Submitted(job_id=response["jobId"], job_name=response["jobName"], size=size)
