"""The attempts of a finished job, and the instance each ran on.

The instance of an attempt comes from Batch (its ECS container instance) then ECS (its EC2
instance id) then EC2 (type and zone). ECS and EC2 forget a terminated instance after about an
hour, so run this soon after the job ends, or give the instance type and zone yourself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from batchspot.jobs import with_children
from worker.errors import error_code
from worker.limits import MAX_DESCRIBE_IDS, chunked


@dataclass(frozen=True)
class Attempt:
    """One attempt of one job or array child, and the instance it ran on."""

    job_id: str
    number: int
    started: datetime
    stopped: datetime
    container_instance_arn: str | None = None
    instance_type: str | None = None
    zone: str | None = None

    @property
    def seconds(self) -> float:
        """Run time of the attempt."""
        return (self.stopped - self.started).total_seconds()


def _millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def job_attempts(batch: Any, job_id: str) -> list[Attempt]:
    """Every finished attempt of the job, or of each child of an array job."""
    _, jobs = with_children(batch, job_id)
    return [
        Attempt(
            job_id=job["jobId"],
            number=number,
            started=_millis(attempt["startedAt"]),
            stopped=_millis(attempt["stoppedAt"]),
            container_instance_arn=attempt.get("container", {}).get("containerInstanceArn"),
        )
        for job in jobs
        for number, attempt in enumerate(job.get("attempts", []), start=1)
        if attempt.get("startedAt") and attempt.get("stoppedAt")
    ]


def _cluster_of(container_instance_arn: str) -> str | None:
    # arn:aws:ecs:<region>:<account>:container-instance/<cluster>/<id>
    parts = container_instance_arn.split(":", 5)[-1].split("/")
    return parts[1] if len(parts) == 3 else None


def locate_instances(ecs: Any, ec2: Any, attempts: list[Attempt]) -> list[Attempt]:
    """Fill in each attempt's instance type and zone where ECS and EC2 still know them."""
    by_cluster: dict[str, set[str]] = defaultdict(set)
    for attempt in attempts:
        arn = attempt.container_instance_arn
        if arn and (cluster := _cluster_of(arn)):
            by_cluster[cluster].add(arn)
    instance_of: dict[str, str] = {}  # container instance ARN -> EC2 instance id
    for cluster, arns in by_cluster.items():
        ordered = sorted(arns)
        for chunk in chunked(ordered, MAX_DESCRIBE_IDS):
            found = ecs.describe_container_instances(cluster=cluster, containerInstances=chunk)[
                "containerInstances"
            ]
            instance_of.update({c["containerInstanceArn"]: c["ec2InstanceId"] for c in found})
    placement = _describe_instances(ec2, sorted(set(instance_of.values())))
    located = []
    for attempt in attempts:
        instance_id = instance_of.get(attempt.container_instance_arn or "")
        instance_type, zone = placement.get(instance_id or "", (None, None))
        located.append(replace(attempt, instance_type=instance_type, zone=zone))
    return located


def _describe_instances(ec2: Any, instance_ids: list[str]) -> dict[str, tuple[str, str]]:
    placement: dict[str, tuple[str, str]] = {}
    for instance_id in instance_ids:  # one by one: a single forgotten id fails a whole call
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as error:
            if error_code(error) != "InvalidInstanceID.NotFound":
                raise
            continue
        for instance in (i for r in reservations for i in r["Instances"]):
            placement[instance["InstanceId"]] = (
                instance["InstanceType"],
                instance["Placement"]["AvailabilityZone"],
            )
    return placement
