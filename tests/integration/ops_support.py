"""Shared set-up for the operator-task tests: boto3 pointed at the emulator, a small stack.

The operator code builds its clients with plain ``boto3.client(...)``, so these tests route it
to the session's emulator the way an operator would: through ``AWS_ENDPOINT_URL``. Names carry
a random suffix because a reused LocalStack keeps state between runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
import pytest

from batchspot.aws import create_queue_with_dlq
from batchspot.emulators import Emulator

SQS_DEFAULT_VISIBILITY_SECONDS = 30  # what a queue created without the attribute gets


@contextmanager
def use_emulator(emulator: Emulator) -> Iterator[None]:
    """Point every boto3 client made inside the block at ``emulator``."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in emulator.client_env().items():
            patch.setenv(name, value)
        yield


def unique(name: str) -> str:
    """Return ``name`` with a short random suffix."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def make_queues(name: str, max_receive: int = 3) -> tuple[str, str]:
    """Create a work queue and its dead-letter queue; return their URLs."""
    return create_queue_with_dlq(
        boto3.client("sqs"), unique(name), SQS_DEFAULT_VISIBILITY_SECONDS, max_receive
    )


@dataclass(frozen=True)
class BatchStack:
    job_queue: str
    job_definition: str
    compute_environment: str
    cluster_arn: str


def make_batch(name: str, max_vcpus: int = 32, vcpus: int = 4) -> BatchStack:
    """Create a Spot compute environment, a job queue and a job definition, as Terraform would."""
    ec2, iam, batch = boto3.client("ec2"), boto3.client("iam"), boto3.client("batch")
    name = unique(name)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
    assume = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": ["batch.amazonaws.com", "ec2.amazonaws.com"]},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=assume)["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    environment = batch.create_compute_environment(
        computeEnvironmentName=name,
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "SPOT",
            "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
            "minvCpus": 0,
            "maxvCpus": max_vcpus,
            "desiredvCpus": 0,
            "instanceTypes": ["c4.4xlarge"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile,
        },
        serviceRole=role,
    )
    queue = batch.create_job_queue(
        jobQueueName=name,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}
        ],
    )
    definition = batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={
            "image": "batchspot-worker:test",
            "command": ["python", "-m", "worker"],
            "resourceRequirements": [
                {"type": "VCPU", "value": str(vcpus)},
                {"type": "MEMORY", "value": "2048"},
            ],
        },
    )
    cluster = batch.describe_compute_environments(computeEnvironments=[name])[
        "computeEnvironments"
    ][0]["ecsClusterArn"]
    return BatchStack(
        job_queue=queue["jobQueueName"],
        job_definition=definition["jobDefinitionArn"],
        compute_environment=name,
        cluster_arn=cluster,
    )
