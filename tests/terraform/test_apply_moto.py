"""Apply the root module to moto's server through ``invoke deploy --local``'s code path, then
check the live emulator for the properties the original stack got wrong, then destroy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from batchspot import status
from batchspot import submit as submitting
from batchspot import terraform as tf
from batchspot.emulators import Emulator, moto_server
from worker.manifest import Counts, Entry, Run, record_failure
from worker.metrics import ITEM_UNITS, NAMESPACE, QUEUE_DIMENSION, SUMMARY_UNITS

pytestmark = [pytest.mark.terraform, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, dict, Path]]:
    """A deployed stack on a private moto server; destroyed (and checked gone) afterwards."""
    work = tmp_path_factory.mktemp("moto-stack")
    with moto_server(work / "logs") as emulator:
        state_dir = work / "state"
        outputs = tf.deploy(local_endpoint=emulator.endpoint, state_dir=state_dir, stream=False)
        yield emulator, outputs, state_dir
        tf.destroy(local_endpoint=emulator.endpoint, state_dir=state_dir, stream=False)
        batch = _client(emulator, "batch")
        assert batch.describe_job_queues()["jobQueues"] == []
        assert _client(emulator, "sqs").list_queues().get("QueueUrls", []) == []
        assert not (state_dir / tf.OUTPUTS_FILE).exists()


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
    # The job definition's S3_QUERY_LIMIT and image (no digest: nothing was pushed) key them.
    assert recipe.query == "SELECT * FROM S3Object s LIMIT 10000"
    assert recipe.code.split("\n") == [outputs["image"], "rows-to-json"]
    changed = submitting.workers_recipe(
        _client(emulator, "batch"),
        _client(emulator, "ecr"),
        outputs["job_definition"],
        {"HANDLER_COMMAND": "wc -l"},
    )
    assert changed.code.split("\n") == [outputs["image"], "wc -l"]


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
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        NAMESPACE,
        "items_failed",
        "Average",
    )
    assert alarm["Dimensions"] == [{"Name": QUEUE_DIMENSION, "Value": outputs["job_queue"]}]
    (dlq_alarm,) = cloudwatch.describe_alarms(AlarmNames=[outputs["dlq_alarm_name"]])[
        "MetricAlarms"
    ]
    alarms_widget = next(w for w in body["widgets"] if w["type"] == "alarm")
    assert set(alarms_widget["properties"]["alarms"]) == {alarm["AlarmArn"], dlq_alarm["AlarmArn"]}
    assert outputs["dashboard_url"].endswith(f"#dashboards:name={outputs['dashboard_name']}")
