"""`invoke doctor`: everything a deploy and a run need, checked, one line each with the fix.

The checks follow AWS Batch's usual reasons for jobs stuck in RUNNABLE (a compute environment
that is INVALID, an instance role without the ECS policy or given as a role rather than an
instance profile, a security group with no way out to ECR, S3 and SQS, a job larger than every
allowed instance type) and what the tasks themselves need (Python, Terraform and its provider,
Docker for ``build``, a region and credentials, the saved outputs, the queues and buckets).
A check that cannot run says why instead of stopping the others.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from batchspot import errors, stack
from batchspot.image import ECR_IMAGE, missing_from_ecr
from batchspot.jobs import tally, with_children
from batchspot.submit import SubmitError, container_properties, workers_recipe
from batchspot.terraform import ENDPOINT_VARIABLE, OUTPUTS_FILE, default_state_dir, read_target
from batchspot.terraform_cli import PLUGIN_MIRROR, TerraformNotInstalled, installed_version
from worker.keys import Recipe
from worker.messages import parse_input_format
from worker.query import QueryError, QueryRequest
from worker.query.auto import AutoEngine

MINIMUM_PYTHON = (3, 11)
ECS_INSTANCE_POLICY = "AmazonEC2ContainerServiceforEC2Role"
HTTPS = 443
# Batch's "optimal" picks from these families (AWS Batch user guide, compute resources).
OPTIMAL_FAMILIES = ("c4", "m4", "r4")
RUNNABLE_HINT = "no reason given: see the compute environment, role, egress and size lines above"

Clients = Callable[..., Any]  # batchspot.stack.aws
# What a check may run into that is a finding, not a bug: its sentence becomes the ✗ line.
_EXPLAINED = (ClientError, BotoCoreError, errors.OperatorError, SubmitError, QueryError, OSError)


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, whether it holds, what was found or the fix.

    A check that is not ``needed`` (Docker: only ``build`` uses it) does not fail the doctor.
    """

    name: str
    ok: bool
    detail: str
    needed: bool = True

    def render(self) -> str:
        """Return ``✓ name: detail`` or ``✗ name: fix``."""
        optional = "" if self.ok or self.needed else " (optional)"
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}{optional}"


@dataclass(frozen=True)
class Checklist:
    """Every check, in order, and the job explanation when one was asked for."""

    checks: list[Check]
    job_lines: list[str]

    @property
    def passed(self) -> bool:
        """Whether everything needed holds."""
        return all(check.ok for check in self.checks if check.needed)

    def render(self) -> str:
        """Return the checklist, then the job's children grouped by status and reason."""
        return "\n".join([c.render() for c in self.checks] + self.job_lines)


def _guarded(name: str, check: Callable[[], Check], needed: bool = True) -> Check:
    """Run one check; an error becomes its ✗ line (with the one-sentence cause), not a crash."""
    try:
        return check()
    except (
        ClientError,
        BotoCoreError,
        errors.OperatorError,
        SubmitError,
        QueryError,
        OSError,
    ) as error:
        return Check(name, False, errors.sentence(error) or str(error), needed)


# --- this machine -------------------------------------------------------------------------------


def check_python() -> Check:
    """Check that the interpreter running the tasks is new enough."""
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MINIMUM_PYTHON:
        return Check("Python", True, f"{version} at {sys.executable}")
    wanted = ".".join(map(str, MINIMUM_PYTHON))
    return Check("Python", False, f"{version} is too old: install Python {wanted}+ and the venv")


def check_terraform() -> Check:
    """Terraform is on PATH and its AWS provider can be installed (mirror, else registry)."""
    try:
        found = installed_version()
    except TerraformNotInstalled as error:
        return Check("Terraform", False, str(error))
    if (PLUGIN_MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        return Check("Terraform", True, f"{found}; hashicorp/aws from the mirror {PLUGIN_MIRROR}")
    return Check(
        "Terraform",
        True,
        f"{found}; hashicorp/aws is downloaded from registry.terraform.io on the first deploy "
        f"(no mirror at {PLUGIN_MIRROR}; set BATCHSPOT_TF_PLUGIN_MIRROR for offline machines)",
    )


def check_docker() -> Check:
    """Check that a Docker engine answers (only ``invoke build`` and ``push`` need one)."""
    from batchspot import image

    def ping() -> Check:
        engine = image.engine()
        engine.ping()
        return Check("Docker", True, f"engine {engine.version().get('Version', '?')}", False)

    try:
        return ping()
    except Exception as error:
        return Check("Docker", False, errors.sentence(error) or str(error), needed=False)


# --- the account and the stack ----------------------------------------------------------------


def check_identity(aws: Clients) -> tuple[Check, str, str]:
    """Check region and credentials: STS says who we are. Return the account and region too."""
    sts = aws("sts")
    identity = sts.get_caller_identity()
    account, region = identity["Account"], sts.meta.region_name
    detail = f"account {account} as {identity['Arn']} in {region}"
    return Check("AWS region and credentials", True, detail), account, region


def check_outputs(saved: dict[str, Any] | None, account: str, region: str) -> Check:
    """Check the saved outputs: which file, which stack, and that this session reaches it."""
    name = "stack outputs"
    path = default_state_dir() / OUTPUTS_FILE
    if saved is None:
        return Check(
            name,
            False,
            f"none saved in {path}: run `invoke deploy`, or set BATCHSPOT_STATE_DIR to the "
            "--state-dir the deploy used",
        )
    foreign = stack.foreign_outputs()
    if foreign:
        return Check(name, False, foreign)
    target = read_target()
    ambient = os.environ.get(ENDPOINT_VARIABLE) or None
    if target is not None and target.endpoint != ambient:
        fix = (
            f"export {ENDPOINT_VARIABLE}={target.endpoint}"
            if target.endpoint
            else f"unset {ENDPOINT_VARIABLE}"
        )
        return Check(
            name,
            False,
            f"{path} names the stack on {target.describe()}, but {ENDPOINT_VARIABLE} is "
            f"{ambient or 'unset'}, so the tasks would ask elsewhere: {fix}",
        )
    where = f"region {saved.get('region', region)}, account {account}"
    on = target.describe() if target else "an unrecorded target"
    return Check(name, True, f"{len(saved)} outputs in {path}, of the stack on {on} ({where})")


def check_queues_and_buckets(aws: Clients, saved: dict[str, Any]) -> Check:
    """Check that the work queue, the dead-letter queue and both buckets answer."""
    sqs, s3 = aws("sqs"), aws("s3")
    for output in ("queue_url", "dlq_url"):
        sqs.get_queue_attributes(QueueUrl=saved[output], AttributeNames=["QueueArn"])
    for output in ("input_bucket", "output_bucket"):
        s3.head_bucket(Bucket=saved[output])
    return Check("queues and buckets", True, f"{saved['queue_url']}, {saved['input_bucket']}")


def check_job_queue(batch: Any, name: str) -> Check:
    """Check that the job queue takes jobs: ENABLED and VALID."""
    found = batch.describe_job_queues(jobQueues=[name])["jobQueues"]
    if not found:
        return Check("job queue", False, f"{name!r} does not exist: run `invoke deploy`")
    queue = found[0]
    state, status = queue.get("state"), queue.get("status")
    if state == "ENABLED" and status == "VALID":
        return Check("job queue", True, f"{name} ENABLED, VALID")
    reason = queue.get("statusReason") or "no reason given"
    return Check("job queue", False, f"{name} is {state}/{status}: {reason}")


def check_compute_environment(environment: dict[str, Any]) -> Check:
    """Check that the compute environment is VALID and ENABLED, else give its statusReason."""
    name = environment.get("computeEnvironmentName")
    status, state = environment.get("status"), environment.get("state")
    if status == "VALID" and state == "ENABLED":
        return Check("compute environment", True, f"{name} VALID, ENABLED")
    reason = environment.get("statusReason") or "no statusReason given"
    return Check("compute environment", False, f"{name} is {status}/{state}: {reason}")


def check_instance_role(iam: Any, environment: dict[str, Any]) -> Check:
    """Check the instance role is an instance profile ARN whose role has the ECS policy."""
    name = "instance role"
    arn = environment.get("computeResources", {}).get("instanceRole", "")
    if not arn:
        return Check(name, True, "none needed (Fargate)")
    if ":instance-profile/" not in arn:
        return Check(
            name,
            False,
            f"{arn} is not an instance profile ARN: Batch needs "
            "arn:aws:iam::<account>:instance-profile/<name> (the stack's instance_role does this)",
        )
    profile = iam.get_instance_profile(InstanceProfileName=arn.rsplit("/", 1)[1])
    roles = [role["RoleName"] for role in profile["InstanceProfile"]["Roles"]]
    for role in roles:
        attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        if any(p["PolicyArn"].endswith(f"/{ECS_INSTANCE_POLICY}") for p in attached):
            return Check(name, True, f"{arn} with {ECS_INSTANCE_POLICY}")
    return Check(
        name,
        False,
        f"the role of {arn} ({', '.join(roles) or 'none'}) lacks {ECS_INSTANCE_POLICY}: "
        "attach it, or instances never join the cluster and jobs stay RUNNABLE",
    )


def _allows_https_out(rule: dict[str, Any]) -> bool:
    protocol = rule.get("IpProtocol")
    ports = protocol == "-1" or (
        protocol == "tcp" and rule.get("FromPort", 0) <= HTTPS <= rule.get("ToPort", 65535)
    )
    targets = ("IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs")
    return ports and any(rule.get(target) for target in targets)


def check_egress(ec2: Any, environment: dict[str, Any]) -> Check:
    """Every security group of the environment lets HTTPS out (ECR, S3, SQS, CloudWatch)."""
    groups = environment.get("computeResources", {}).get("securityGroupIds", [])
    if not groups:
        return Check("security group egress", True, "the VPC's default group")
    described = ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
    closed = [
        g["GroupId"]
        for g in described
        if not any(_allows_https_out(rule) for rule in g.get("IpPermissionsEgress", []))
    ]
    if closed:
        return Check(
            "security group egress",
            False,
            f"{', '.join(closed)} allows no HTTPS out: add an egress rule for TCP 443 (or VPC "
            "endpoints), or instances cannot pull the image or reach S3 and SQS",
        )
    return Check("security group egress", True, f"HTTPS out from {', '.join(groups)}")


def _families(instance_types: Iterable[str]) -> list[str]:
    """EC2 type filters for the environment's instanceTypes ("optimal", "c5", "c5.large")."""
    patterns: list[str] = []
    for given in instance_types:
        if given == "optimal":
            patterns += [f"{family}.*" for family in OPTIMAL_FAMILIES]
        else:
            patterns.append(given if "." in given else f"{given}.*")
    return patterns


def largest_allowed(ec2: Any, instance_types: Iterable[str]) -> tuple[str, int, int] | None:
    """Return the allowed type with the most memory, (name, MiB, vCPUs), or None."""
    pages = ec2.get_paginator("describe_instance_types").paginate(
        Filters=[{"Name": "instance-type", "Values": _families(instance_types)}]
    )
    known = [
        (t["InstanceType"], t["MemoryInfo"]["SizeInMiB"], t["VCpuInfo"]["DefaultVCpus"])
        for page in pages
        for t in page["InstanceTypes"]
    ]
    return max(known, key=lambda t: (t[1], t[2])) if known else None


def job_size(definition: dict[str, Any]) -> tuple[int, float]:
    """Return the definition's memory (MiB) and vCPUs: resourceRequirements, else old fields."""
    container = definition.get("containerProperties", {})
    wanted = {r["type"]: r["value"] for r in container.get("resourceRequirements", [])}
    memory = int(wanted.get("MEMORY", container.get("memory", 0)))
    vcpus = float(wanted.get("VCPU", container.get("vcpus", 0)))
    return memory, vcpus


def check_job_size(batch: Any, ec2: Any, definition_name: str, environment: dict) -> Check:
    """Check that the job fits the largest instance type the environment may start."""
    name = "job size"
    definitions = batch.describe_job_definitions(
        jobDefinitionName=definition_name, status="ACTIVE"
    )["jobDefinitions"]
    if not definitions:
        return Check(name, False, f"no ACTIVE job definition {definition_name!r}: run deploy")
    definition = max(definitions, key=lambda d: d["revision"])
    memory, vcpus = job_size(definition)
    resources = environment.get("computeResources", {})
    if resources.get("type") in ("FARGATE", "FARGATE_SPOT"):
        return Check(name, True, f"{memory} MiB, {vcpus:g} vCPU on Fargate")
    largest = largest_allowed(ec2, resources.get("instanceTypes", []))
    if largest is None:
        return Check(name, False, "EC2 knows none of the allowed instance types: fix them")
    type_name, most_memory, most_vcpus = largest
    if memory > most_memory or vcpus > most_vcpus:
        return Check(
            name,
            False,
            f"{definition_name}:{definition['revision']} asks {memory} MiB and {vcpus:g} vCPU, "
            f"the largest allowed type {type_name} has {most_memory} MiB and {most_vcpus}: "
            "lower the job's memory/vCPUs or allow larger instance types",
        )
    return Check(name, True, f"{memory} MiB, {vcpus:g} vCPU fit {type_name} ({most_memory} MiB)")


def check_image(batch: Any, ecr: Any, definition_name: str) -> Check:
    """Check that ECR holds the job definition's image (by digest, else tag)."""
    image = container_properties(batch, definition_name).get("image", "")
    problem = missing_from_ecr(ecr, image)
    if problem:
        return Check("image", False, problem)
    where = "in ECR" if ECR_IMAGE.fullmatch(image) else "not an ECR image: not checked"
    return Check("image", True, f"{image} ({where})")


def check_s3_select(s3: Any, bucket: str, recipe: Recipe) -> Check:
    """Run the workers' query as QUERY_ENGINE=auto does, and say which engine it settles on.

    The trust check is the worker's own (:class:`worker.query.auto.AutoEngine`), so doctor and
    the worker cannot disagree about an endpoint.
    """
    name = "S3 Select"
    listed = s3.list_objects_v2(Bucket=bucket, MaxKeys=1).get("Contents", [])
    if not listed:
        return Check(name, False, f"no object in {bucket} to try it on: upload one, rerun", False)
    key = listed[0]["Key"]
    request = QueryRequest(
        bucket, key, recipe.query, parse_input_format(None, key), recipe.rows_format
    )
    engine = AutoEngine()
    with contextlib.redirect_stdout(io.StringIO()):  # its switch log line; the reason is below
        engine.run(s3, request).text  # noqa: B018 - read whole: the checks run as it is read
    if engine.local_reason is not None:
        detail = f"QUERY_ENGINE=auto uses the local engine here: {engine.local_reason}"
        return Check(name, False, detail, False)
    if not engine.limit_settled:
        detail = (
            f"S3 Select answered, but s3://{bucket}/{key} has under two records, too few to "
            "check that it honours LIMIT: upload a larger object, rerun"
        )
        return Check(name, False, detail, False)
    return Check(name, True, "QUERY_ENGINE=auto queries with S3 Select (its checks passed)", False)


# --- a job ----------------------------------------------------------------------------------


def explain_job(batch: Any, job_id: str) -> list[str]:
    """Group a job's children (or the job) by status and the reason Batch gives."""
    job, children = with_children(batch, job_id)
    array = children != [job]
    lines = [f"job {job_id}: " + (f"{len(children)} children" if array else job["status"])]
    return lines + tally(children, {"RUNNABLE": RUNNABLE_HINT})


# --- the whole checklist ----------------------------------------------------------------------


def _stack_checks(aws: Clients, saved: dict[str, Any]) -> list[Check]:
    batch, ec2 = aws("batch"), aws("ec2")
    checks = [
        _guarded("queues and buckets", lambda: check_queues_and_buckets(aws, saved)),
        _guarded("job queue", lambda: check_job_queue(batch, saved["job_queue"])),
    ]
    found = batch.describe_compute_environments(
        computeEnvironments=[saved["compute_environment_name"]]
    )["computeEnvironments"]
    if not found:
        name = saved["compute_environment_name"]
        return [*checks, Check("compute environment", False, f"{name!r} does not exist: deploy")]
    environment = found[0]
    checks += [
        check_compute_environment(environment),
        _guarded("instance role", lambda: check_instance_role(aws("iam"), environment)),
        _guarded("security group egress", lambda: check_egress(ec2, environment)),
        _guarded(
            "job size",
            lambda: check_job_size(batch, ec2, saved["job_definition"], environment),
        ),
        _guarded("image", lambda: check_image(batch, aws("ecr"), saved["job_definition"])),
        _guarded("S3 Select", lambda: _select_check(aws, saved), False),
    ]
    return checks


def _select_check(aws: Clients, saved: dict[str, Any]) -> Check:
    recipe = workers_recipe(aws("batch"), aws("ecr"), saved["job_definition"], {})
    return check_s3_select(aws("s3"), saved["input_bucket"], recipe)


def diagnose(aws: Clients = stack.aws, job_id: str | None = None) -> Checklist:
    """Run every check (and explain ``job_id`` if given); AWS checks wait for credentials."""
    checks = [check_python(), _guarded("Terraform", check_terraform), check_docker()]
    try:
        identity, account, region = check_identity(aws)
    except (ClientError, BotoCoreError, errors.OperatorError) as error:
        text = errors.sentence(error) or str(error)
        checks.append(Check("AWS region and credentials", False, text))
        return Checklist(checks, [])
    checks.append(identity)
    saved = stack.outputs()
    checks.append(_guarded("stack outputs", lambda: check_outputs(saved, account, region)))
    if saved is not None and checks[-1].ok:
        try:
            checks += _stack_checks(aws, saved)
        except (ClientError, BotoCoreError, KeyError) as error:
            text = errors.sentence(error) or f"the saved outputs lack {error}: run `invoke deploy`"
            checks.append(Check("stack", False, text))
    job_lines: list[str] = []
    if job_id:
        try:
            job_lines = explain_job(aws("batch"), job_id)
        except (ClientError, BotoCoreError, errors.OperatorError) as error:
            checks.append(Check("job", False, errors.sentence(error) or str(error)))
    return Checklist(checks, job_lines)
