"""`invoke doctor` as typed, against the Terraform stack applied to moto's server: the deployed
stack passes; a stack broken the three usual RUNNABLE ways gets one ✗ naming each cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchspot import terraform as tf
from batchspot.emulators import Emulator, moto_server

pytestmark = [pytest.mark.terraform, pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
TOO_MUCH_MEMORY = 64 * 1024 * 1024  # 64 TiB: more than any EC2 instance type has


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory, push_stand_in: Callable[[Emulator, dict], None]
) -> Iterator[tuple[Emulator, Path]]:
    """The stack applied to a private moto server, with one CSV in its input bucket."""
    work = tmp_path_factory.mktemp("doctor-stack")
    with moto_server(work / "logs") as emulator:
        state_dir = work / "state"
        outputs = tf.deploy(local_endpoint=emulator.endpoint, state_dir=state_dir, stream=False)
        emulator.client("s3").put_object(
            Bucket=outputs["input_bucket"], Key="in/a.csv", Body=b"a,b\n1,2\n3,4\n"
        )
        push_stand_in(emulator, outputs)
        yield emulator, state_dir


def doctor(emulator: Emulator, state_dir: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Run `invoke doctor` as an operator would: only the emulator's variables, no Docker."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        **emulator.client_env(),
        tf.STATE_DIR_VARIABLE: str(state_dir),
        "DOCKER_HOST": "tcp://127.0.0.1:9",  # nothing listens there
    }
    return subprocess.run(
        [str(INVOKE), "doctor"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The checklist as {check name: its whole line}."""
    found = {}
    for line in result.stdout.splitlines():
        if line[:2] in ("✓ ", "✗ "):
            found[line[2:].split(":", 1)[0]] = line
    return found


def test_the_deployed_stack_passes_every_needed_check(deployed, tmp_path):
    emulator, state_dir = deployed

    result = doctor(emulator, state_dir, tmp_path)

    checks = lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    failed = {name for name, line in checks.items() if line.startswith("✗")}
    # Both optional: no Docker engine here, and moto's S3 Select ignores LIMIT (AWS honours it:
    # Amazon S3 User Guide, "SELECT command"), so the worker's auto engine would not trust it.
    assert failed == {"Docker", "S3 Select"}, result.stdout
    assert "does not honour LIMIT" in checks["S3 Select"]
    assert {
        "Python",
        "Terraform",
        "AWS region and credentials",
        "stack outputs",
        "queues and buckets",
        "job queue",
        "compute environment",
        "instance role",
        "security group egress",
        "job size",
        "image",
        "S3 Select",
    } <= set(checks)
    assert "Traceback" not in result.stderr


def _broken_stack(emulator: Emulator, outputs: dict[str, Any]) -> dict[str, str]:
    """A compute environment with a role ARN and a closed security group, a job too large."""
    ec2, iam, batch = (emulator.client(s) for s in ("ec2", "iam", "batch"))
    (environment,) = batch.describe_compute_environments(
        computeEnvironments=[outputs["compute_environment_name"]]
    )["computeEnvironments"]
    resources = environment["computeResources"]
    group = ec2.create_security_group(
        GroupName="closed", Description="no egress", VpcId=outputs["vpc_id"]
    )["GroupId"]
    ec2.revoke_security_group_egress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    profile = resources["instanceRole"].rsplit("/", 1)[1]
    (role,) = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    # AWS takes a role ARN here and the environment goes INVALID later; moto refuses any ARN
    # that names no instance profile, so a profile is named after the role's ARN to get past it.
    iam.create_instance_profile(InstanceProfileName=role["Arn"])
    broken = batch.create_compute_environment(
        computeEnvironmentName="broken",
        type="MANAGED",
        state="ENABLED",
        computeResources={
            **{k: resources[k] for k in ("type", "minvCpus", "maxvCpus", "subnets")},
            "instanceTypes": ["c4"],
            "securityGroupIds": [group],
            "instanceRole": role["Arn"],  # a role ARN where Batch needs the profile's
        },
        serviceRole=environment["serviceRole"],
    )
    batch.create_job_queue(
        jobQueueName="broken",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": broken["computeEnvironmentArn"]}
        ],
    )
    batch.register_job_definition(
        jobDefinitionName="broken",
        type="container",
        containerProperties={
            "image": outputs["image"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "2"},
                {"type": "MEMORY", "value": str(TOO_MUCH_MEMORY)},
            ],
        },
    )
    return {
        "compute_environment_name": "broken",
        "job_queue": "broken",
        "job_definition": "broken",
    }


def test_a_broken_stack_gets_one_cross_naming_each_cause(deployed, tmp_path):
    emulator, state_dir = deployed
    outputs = tf.read_outputs(state_dir)
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (broken_dir / tf.OUTPUTS_FILE).write_text(
        json.dumps({**outputs, **_broken_stack(emulator, outputs)})
    )

    result = doctor(emulator, broken_dir, tmp_path)

    checks = lines(result)
    assert result.returncode == 1, result.stdout
    assert "is not an instance profile ARN" in checks["instance role"]
    assert checks["instance role"].startswith("✗")
    assert checks["security group egress"].startswith("✗")
    assert "allows no HTTPS out" in checks["security group egress"]
    assert checks["job size"].startswith("✗")
    assert f"asks {TOO_MUCH_MEMORY} MiB" in checks["job size"]
    assert "the largest allowed type c4." in checks["job size"]
    assert checks["job queue"].startswith("✓")  # what is not broken stays ✓
    assert result.stderr.strip() == "error: some needed checks failed: see the ✗ lines above"
