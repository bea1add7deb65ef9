"""Apply the root module to moto's server once, through ``invoke deploy --local``'s code path,
then check on that one live stack: the properties the original stack got wrong, ``invoke plan``
and ``invoke doctor`` as typed. (Each apply costs 1-2 minutes of the provider's own waiters;
``invoke destroy`` is walked, and checked to leave nothing, in test_operator_walk.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from batchspot import status
from batchspot import submit as submitting
from batchspot import terraform as tf
from batchspot.emulators import Emulator, moto_server
from tests.terraform.conftest import PushStandIn
from worker.manifest import Counts, Entry, Run, record_failure
from worker.metrics import ITEM_UNITS, NAMESPACE, QUEUE_DIMENSION, SUMMARY_UNITS

pytestmark = [pytest.mark.terraform, pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, push_stand_in: PushStandIn
) -> Iterator[tuple[Emulator, dict, Path]]:
    """The stack deployed on a private moto server, with its image "pushed" (the stand-in)
    and one CSV in its input bucket."""
    work = tmp_path_factory.mktemp("moto-stack")
    with moto_server(work / "logs") as emulator:
        state_dir = work / "state"
        outputs = tf.deploy(local_endpoint=emulator.endpoint, state_dir=state_dir, stream=False)
        emulator.client("s3").put_object(
            Bucket=outputs["input_bucket"], Key="in/a.csv", Body=b"a,b\n1,2\n3,4\n"
        )
        push_stand_in(emulator, outputs)
        yield emulator, outputs, state_dir


def _client(emulator: Emulator, service: str):
    env = emulator.client_env()
    return boto3.client(
        service,
        endpoint_url=emulator.endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def test_outputs_are_saved_for_the_other_tasks(stack):
    _, outputs, state_dir = stack
    assert tf.read_outputs(state_dir) == outputs
    assert outputs["job_queue"] == "batchspot" and outputs["job_definition"] == "batchspot"
    assert outputs["input_bucket"] == "batchspot-input-123456789012"


def test_compute_environment_is_spot_with_the_instance_profile(stack):
    emulator, outputs, _ = stack
    batch, iam = _client(emulator, "batch"), _client(emulator, "iam")
    (env,) = batch.describe_compute_environments(
        computeEnvironments=[outputs["compute_environment_name"]]
    )["computeEnvironments"]
    resources = env["computeResources"]
    assert env["type"] == "MANAGED" and resources["type"] == "SPOT"
    assert resources["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert resources["minvCpus"] == 0 and resources["maxvCpus"] == 128
    profiles = {p["Arn"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    assert resources["instanceRole"] in profiles, "instanceRole must be the instance PROFILE ARN"
    (queue,) = batch.describe_job_queues(jobQueues=[outputs["job_queue"]])["jobQueues"]
    assert queue["computeEnvironmentOrder"][0]["computeEnvironment"] == env["computeEnvironmentArn"]


def test_job_definition_environment_names_the_created_queue(stack):
    emulator, outputs, _ = stack
    (definition,) = _client(emulator, "batch").describe_job_definitions(
        jobDefinitionName=outputs["job_definition"], status="ACTIVE"
    )["jobDefinitions"]
    environment = {e["name"]: e["value"] for e in definition["containerProperties"]["environment"]}
    assert environment["SQS_QUEUE_URL"] == outputs["queue_url"]
    assert environment["OUTPUT_BUCKET"] == outputs["output_bucket"]
    assert environment["S3_QUERY_LIMIT"] == "10000"
    assert definition["containerProperties"]["image"] == outputs["image"]
    rules = definition["retryStrategy"]["evaluateOnExit"]
    assert rules[0]["onStatusReason"] == "Host EC2*" and rules[0]["action"].upper() == "RETRY"
    assert rules[-1]["action"].upper() == "EXIT"


def test_work_queue_redrives_to_the_dlq(stack):
    emulator, outputs, _ = stack
    sqs = _client(emulator, "sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["queue_url"], AttributeNames=["All"])
    redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
    dlq_arn = sqs.get_queue_attributes(QueueUrl=outputs["dlq_url"], AttributeNames=["QueueArn"])
    assert redrive["deadLetterTargetArn"] == dlq_arn["Attributes"]["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 6


def test_buckets_block_public_access(stack):
    emulator, outputs, _ = stack
    s3 = _client(emulator, "s3")
    for bucket in (outputs["input_bucket"], outputs["output_bucket"]):
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4, (bucket, block)


def test_job_role_policy_names_only_our_queue_and_buckets(stack):
    emulator, outputs, _ = stack
    iam = _client(emulator, "iam")
    role = outputs["job_role_arn"].rsplit("/", 1)[1]
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(document)
    queue_arn = outputs["queue_arn"]
    allowed = {
        queue_arn,
        f"arn:aws:s3:::{outputs['input_bucket']}/*",
        f"arn:aws:s3:::{outputs['output_bucket']}/{outputs['output_prefix']}*",
    }
    resources, actions = set(), set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        resources |= set(_as_list(statement["Resource"]))
        actions |= set(_as_list(statement["Action"]))
    assert resources == allowed
    assert "*" not in actions and not any(a.endswith(":*") for a in actions)
    assert actions == {
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_local_mode_leaves_the_terraform_dir_untouched(stack):
    repo_terraform = Path(tf.TERRAFORM_DIR)
    assert not list(repo_terraform.glob("*_override.tf"))
    work = stack[2] / "terraform"
    assert (work / tf.OVERRIDE_FILE).is_file() and (work / "terraform.tfstate").is_file()


def test_submit_then_adds_a_final_job_after_the_whole_array_job(stack):
    emulator, outputs, _ = stack
    batch = _client(emulator, "batch")
    job = submitting.submit(
        batch,
        job_queue=outputs["job_queue"],
        job_definition=outputs["job_definition"],
        size=3,
        env={"CODE_VERSION": "batchspot@sha256:" + "1" * 64},
        final=submitting.FinalStep(
            outputs["final_job_definition"], command="jq -s length", tolerate_failures=5
        ),
    )

    (final,) = batch.describe_jobs(jobs=[job.final_job_id])["jobs"]
    # A plain dependsOn on the array job: Batch starts it once every child has ended.
    assert final["dependsOn"] == [{"jobId": job.job_id}]
    assert f"job-definition/{outputs['final_job_definition']}:" in final["jobDefinition"]
    assert final["jobQueue"].endswith(f"job-queue/{outputs['job_queue']}")
    environment = {e["name"]: e["value"] for e in final["container"]["environment"]}
    assert environment["RUN_JOB_ID"] == job.job_id
    assert (environment["FINAL_COMMAND"], environment["TOLERATE_FAILURES"]) == ("jq -s length", "5")
    assert environment["CODE_VERSION"] == "batchspot@sha256:" + "1" * 64, "the workers' settings"
    (definition,) = batch.describe_job_definitions(
        jobDefinitionName=outputs["final_job_definition"], status="ACTIVE"
    )["jobDefinitions"]
    assert definition["containerProperties"]["command"] == ["python", "-m", "worker.final"]


def test_status_counts_the_runs_items_as_the_manifest_does(stack):
    emulator, outputs, _ = stack
    batch, s3, sqs = (_client(emulator, name) for name in ("batch", "s3", "sqs"))
    job = submitting.submit(
        batch, job_queue=outputs["job_queue"], job_definition=outputs["job_definition"], size=2
    )
    bucket, prefix = outputs["output_bucket"], outputs["output_prefix"]
    # What the run's children leave: one result, one last failure; and another run's result.
    for key, job_id in [("in/a.csv.0123456789abcdef.json", f"{job.job_id}:1"),
                        ("in/b.csv.0123456789abcdef.json", "another-job:0")]:  # fmt: skip
        s3.put_object(Bucket=bucket, Key=prefix + key, Body=b"{}", Metadata={"job-id": job_id})
    run = Run(job.job_id, bucket, prefix, outputs["queue_url"])
    record_failure(s3, run, "message-1", Entry("s3://in/c.csv", None, None, 3, "refused"))

    state = status.snapshot(
        sqs,
        batch,
        queue_url=outputs["queue_url"],
        dlq_url=outputs["dlq_url"],
        job_id=job.job_id,
        s3=s3,
        output_bucket=bucket,
        output_prefix=prefix,
    )

    assert state.items == Counts(succeeded=1, failed=1, pending=0, dead_lettered=0)
    assert "items: succeeded 1, failed 1, pending in the queue 0, dead-lettered 0" in state.render()


def test_seed_skip_done_keys_results_by_the_deployed_workers_settings(stack):
    emulator, outputs, _ = stack
    recipe = submitting.workers_recipe(
        _client(emulator, "batch"), _client(emulator, "ecr"), outputs["job_definition"], {}
    )
    # The job definition's S3_QUERY_LIMIT and image key them, the image by the digest ECR
    # holds for its tag (the stand-in push put one there).
    (pushed,) = _client(emulator, "ecr").describe_images(
        repositoryName=outputs["ecr_repository_url"].rsplit("/", 1)[1]
    )["imageDetails"]
    pinned = f"{outputs['ecr_repository_url']}@{pushed['imageDigest']}"
    assert recipe.query == "SELECT * FROM S3Object s LIMIT 10000"
    assert recipe.code.split("\n") == [pinned, "rows-to-json"]
    changed = submitting.workers_recipe(
        _client(emulator, "batch"),
        _client(emulator, "ecr"),
        outputs["job_definition"],
        {"HANDLER_COMMAND": "wc -l"},
    )
    assert changed.code.split("\n") == [pinned, "wc -l"]


def test_image_repository_refuses_to_move_a_tag(stack):
    emulator, outputs, _ = stack
    name = outputs["ecr_repository_url"].split("/", 1)[1]
    (repository,) = _client(emulator, "ecr").describe_repositories(repositoryNames=[name])[
        "repositories"
    ]
    assert repository["imageTagMutability"] == "IMMUTABLE"


def test_dashboard_and_failure_alarm_read_the_metrics_the_workers_write(stack):
    """The dashboard's and the alarm's BatchSpot metrics are the ones the worker's EMF lines
    declare (worker/metrics.py), under the dimension they carry, so neither shows nothing."""
    emulator, outputs, _ = stack
    cloudwatch = _client(emulator, "cloudwatch")
    body = json.loads(
        cloudwatch.get_dashboard(DashboardName=outputs["dashboard_name"])["DashboardBody"]
    )
    ours = [
        metric
        for widget in body["widgets"]
        for metric in widget["properties"].get("metrics", [])
        if metric[0] == NAMESPACE
    ]
    assert {m[1] for m in ours} <= set(ITEM_UNITS) | set(SUMMARY_UNITS)
    assert {(m[2], m[3]) for m in ours} == {(QUEUE_DIMENSION, outputs["job_queue"])}
    (alarm,) = cloudwatch.describe_alarms(AlarmNames=[outputs["failure_alarm_name"]])[
        "MetricAlarms"
    ]
    # A batch's item line counts its items, so the rate is Sum(failed) / Sum(ok + failed).
    read = {
        query["Id"]: query["MetricStat"]
        for query in alarm["Metrics"]
        if "MetricStat" in query and not query["ReturnData"]
    }
    assert {
        (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"], stat["Stat"])
        for stat in read.values()
    } == {(NAMESPACE, "items_ok", "Sum"), (NAMESPACE, "items_failed", "Sum")}
    assert all(
        stat["Metric"]["Dimensions"] == [{"Name": QUEUE_DIMENSION, "Value": outputs["job_queue"]}]
        for stat in read.values()
    )
    (rate,) = [query for query in alarm["Metrics"] if query["ReturnData"]]
    assert set(read) <= set(re.findall(r"[a-z]\w*", rate["Expression"]))
    rate_widget = next(w for w in body["widgets"] if "alarm reads it" in w["properties"]["title"])
    assert rate["Expression"] in {
        m[0].get("expression") for m in rate_widget["properties"]["metrics"] if len(m) == 1
    }
    (dlq_alarm,) = cloudwatch.describe_alarms(AlarmNames=[outputs["dlq_alarm_name"]])[
        "MetricAlarms"
    ]
    alarms_widget = next(w for w in body["widgets"] if w["type"] == "alarm")
    assert set(alarms_widget["properties"]["alarms"]) == {alarm["AlarmArn"], dlq_alarm["AlarmArn"]}
    assert outputs["dashboard_url"].endswith(f"#dashboards:name={outputs['dashboard_name']}")


# --- invoke plan ---------------------------------------------------------------------------


def changes_pending(stack: tuple[Emulator, dict, Path], **variables: object) -> bool:
    """Plan the stack's storage, as ``invoke plan`` does, with ``variables`` changed.

    Storage only: moto does not store every attribute the rest of the stack sets (a job queue's
    ``job_state_time_limit_action``, a launch template's ``tag_specifications``, the redrive
    policy's JSON spacing), so a plan of the whole stack always differs from moto's state
    there, never from AWS's.
    """
    emulator, _, state_dir = stack
    return tf.plan(
        variables=variables,
        local_endpoint=emulator.endpoint,
        state_dir=state_dir,
        targets=("module.storage",),
        stream=False,
    )


def test_a_fresh_deploy_plans_no_changes(stack: tuple[Emulator, dict, Path]) -> None:
    assert changes_pending(stack) is False


def test_a_changed_variable_plans_changes_and_applies_none(
    stack: tuple[Emulator, dict, Path],
) -> None:
    assert changes_pending(stack, output_expiration_days=7) is True
    assert changes_pending(stack) is False, "a plan must not apply what it shows"


def test_invoke_plan_prints_its_verdict_as_typed(stack: tuple[Emulator, dict, Path]) -> None:
    """The task plans the whole stack, which on moto always differs (see changes_pending)."""
    emulator, _, state_dir = stack
    result = subprocess.run(
        [
            str(INVOKE),
            "plan",
            "--local-endpoint",
            emulator.endpoint,
            "--state-dir",
            str(state_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "changes pending"


# --- invoke doctor -------------------------------------------------------------------------

TOO_MUCH_MEMORY = 64 * 1024 * 1024  # 64 TiB: more than any EC2 instance type has


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


def test_doctor_passes_the_deployed_stack_on_every_needed_check(stack, tmp_path):
    emulator, _, state_dir = stack

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


def test_doctor_gives_a_broken_stack_one_cross_naming_each_cause(stack, tmp_path):
    emulator, _, state_dir = stack
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
