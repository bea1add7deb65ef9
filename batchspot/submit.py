"""Submit the workers: one AWS Batch array job whose children drain the queue.

The children are interchangeable (each one drains the same queue until it stays empty), so
the only decision is how many to start. ``auto`` starts one per ``per_worker`` queued items,
never more than the compute environments can run at once: extra children would only wait in
RUNNABLE and then find the queue empty. Queued items are the queue's messages times the items a
message names, as the seeds recorded it (``batchspot.queued_items``): one without batches.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from batchspot.image import ECR_IMAGE, missing_from_ecr
from worker.config import JOB_NAME_VARIABLE, ConfigError, load_config
from worker.keys import Recipe
from worker.queue_depth import ITEMS_PER_MESSAGE_VARIABLE, queue_counts

MAX_ARRAY_SIZE = 10_000  # AWS Batch's limit on array children
DEFAULT_PER_WORKER = 100  # items per child for --size auto


class SubmitError(ValueError):
    """The job cannot be submitted as asked; the text says why."""


@dataclass(frozen=True)
class Submitted:
    """A submitted job and how to follow it."""

    job_id: str
    job_name: str
    size: int
    final_job_id: str | None = None

    def summary(self) -> str:
        """Return the job id and the commands that watch it."""
        shape = f"array job of {self.size} children" if self.size > 1 else "single job"
        return (
            f"submitted {self.job_name} ({shape}): {self.job_id}\n"
            f"watch it:  invoke status --job-id {self.job_id} --watch\n"
            f"its logs:  invoke logs --job-id {self.job_id} --follow"
            + (
                f"\nfinal job (after it): {self.final_job_id}"
                if self.final_job_id
                else f"\nits results: invoke results --job-id {self.job_id}"
            )
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
    """One child per ``per_worker`` queued items, capped by what fits in the compute environment."""
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


def container_properties(batch: Any, job_definition: str) -> dict[str, Any]:
    """Return the container the job definition runs (its latest revision for a bare name)."""
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
    return max(definitions, key=lambda d: d["revision"]).get("containerProperties", {})


def vcpus_per_child(batch: Any, job_definition: str) -> float:
    """Return the vCPUs one child asks for in the job definition (1 if it does not say)."""
    container = container_properties(batch, job_definition)
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
    items_per_message: float = 1.0,
) -> int:
    """Turn ``--size`` (a number or ``auto``) into a number of children.

    ``auto`` counts ``items_per_message`` items for each visible message.
    """
    if size != "auto":
        if not size.isdigit() or not 1 <= int(size) <= MAX_ARRAY_SIZE:
            raise SubmitError(f"--size must be auto or 1..{MAX_ARRAY_SIZE}, got {size!r}")
        return int(size)
    queued = queue_counts(sqs, queue_url).visible
    if queued == 0:
        raise SubmitError("the work queue is empty: seed it first (invoke seed)")
    return auto_size(
        math.ceil(queued * items_per_message),
        per_worker,
        capacity_vcpus(batch, job_queue),
        vcpus_per_child(batch, job_definition),
    )


def code_version(batch: Any, ecr: Any, job_definition: str) -> str:
    """Return the workers' CODE_VERSION: the job definition's image, by digest if ECR knows it.

    A tag such as ``latest`` moves with every push; its digest names the code that will run.
    An image outside ECR, or one ECR cannot describe, is named as the job definition names it.
    """
    image = container_properties(batch, job_definition).get("image", "")
    match = ECR_IMAGE.fullmatch(image)
    if not match or match["digest"]:
        return image
    try:
        details = ecr.describe_images(
            registryId=match["registry"],
            repositoryName=match["repository"],
            imageIds=[{"imageTag": match["tag"] or "latest"}],
        )["imageDetails"]
    except ClientError:
        return image
    return (
        f"{match['host']}/{match['repository']}@{details[0]['imageDigest']}" if details else image
    )


def require_image_in_ecr(batch: Any, ecr: Any, job_definition: str) -> None:
    """Refuse to submit workers whose image ECR does not hold (:func:`missing_from_ecr`)."""
    problem = missing_from_ecr(ecr, container_properties(batch, job_definition).get("image", ""))
    if problem:
        raise SubmitError(problem)


def worker_overrides(
    batch: Any, ecr: Any, job_definition: str, env: dict[str, str]
) -> dict[str, str]:
    """Return what ``invoke submit`` adds to the job definition's environment.

    CODE_VERSION (see :func:`code_version`), then the operator's ``--env``, which wins.
    """
    return {"CODE_VERSION": code_version(batch, ecr, job_definition), **env}


def workers_recipe(batch: Any, ecr: Any, job_definition: str, env: dict[str, str]) -> Recipe:
    """Return the recipe the workers of ``invoke submit --env ...`` will key their results by.

    It is read from the settings the containers get: the job definition's environment and
    what submit adds (:func:`worker_overrides`). ``seed --skip-done`` uses it.
    """
    container = container_properties(batch, job_definition)
    settings = {item["name"]: item["value"] for item in container.get("environment", [])}
    settings.update(worker_overrides(batch, ecr, job_definition, env))
    try:
        return load_config(settings).recipe
    except ConfigError as error:
        raise SubmitError(f"the workers' settings are not valid: {error}") from None


@dataclass(frozen=True)
class FinalStep:
    """The job ``--then`` adds after the array job: manifest, then an optional reduce command."""

    job_definition: str
    command: str | None = None
    tolerate_failures: float | None = None
    tolerate_pending: bool = False
    # Items a message of the work queue names, as seeded: the final job cannot see the seeds.
    items_per_message: float | None = None

    def __post_init__(self) -> None:
        """Refuse a share that is not a percentage, before anything is submitted."""
        if self.tolerate_failures is not None and not 0 <= self.tolerate_failures <= 100:
            raise SubmitError(
                f"--tolerate-failures must be a percentage 0..100, got {self.tolerate_failures:g}"
            )

    def environment(self, run_id: str, started: datetime) -> dict[str, str]:
        """Return what the final job's container is told (read by ``worker.final``)."""
        env = {"RUN_JOB_ID": run_id, "RUN_STARTED": started.isoformat()}
        if self.command:
            env["FINAL_COMMAND"] = self.command
        if self.tolerate_failures is not None:
            env["TOLERATE_FAILURES"] = f"{self.tolerate_failures:g}"
        if self.tolerate_pending:
            env["TOLERATE_PENDING"] = "true"
        if self.items_per_message is not None:
            env[ITEMS_PER_MESSAGE_VARIABLE] = f"{self.items_per_message:g}"
        return env


def _overrides(env: dict[str, str]) -> dict[str, Any]:
    return {"environment": [{"name": name, "value": value} for name, value in env.items()]}


def submit(
    batch: Any,
    *,
    job_queue: str,
    job_definition: str,
    size: int,
    env: dict[str, str] | None = None,
    job_name: str = "batchspot",
    final: FinalStep | None = None,
) -> Submitted:
    """Submit ``size`` children: an array job from 2, a plain job for 1 (Batch's rule).

    With ``final``, also submit the final job, which Batch starts once the whole array job
    has ended (a plain ``dependsOn`` on the array job: N_TO_N would pair it with one child).
    """
    started = datetime.now(UTC)
    request: dict[str, Any] = {
        "jobName": job_name,
        "jobQueue": job_queue,
        "jobDefinition": job_definition,
    }
    if size > 1:
        request["arrayProperties"] = {"size": size}
    # Batch tells a container its queue but not its job's name: the metrics need both.
    env = {JOB_NAME_VARIABLE: job_name, **(env or {})}
    request["containerOverrides"] = _overrides(env)
    response = batch.submit_job(**request)
    submitted = Submitted(job_id=response["jobId"], job_name=response["jobName"], size=size)
    if final is None:
        return submitted
    final_env = {**env, **final.environment(submitted.job_id, started)}
    following = batch.submit_job(
        jobName=f"{job_name}-final",
        jobQueue=job_queue,
        jobDefinition=final.job_definition,
        dependsOn=[{"jobId": submitted.job_id}],
        containerOverrides=_overrides(final_env),
    )
    return replace(submitted, final_job_id=following["jobId"])
