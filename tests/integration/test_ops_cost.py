"""cost and logs of a finished job, against moto (Batch, ECS, EC2 and CloudWatch Logs)."""

import json
import time

import boto3
import pytest

from batchspot.aws import client
from batchspot.cost import Given, job_cost, write_chart
from batchspot.cost.attempts import Attempt, locate_instances
from batchspot.logs import show_logs
from batchspot.submit import submit
from tests.integration.ops_support import make_batch, unique, use_emulator

pytestmark = pytest.mark.moto_only


@pytest.fixture(scope="module", autouse=True)
def aws(emulator):
    with use_emulator(emulator):
        yield


@pytest.fixture(scope="module")
def stack(aws):
    return make_batch("ops-cost", max_vcpus=16, vcpus=2)


@pytest.fixture(scope="module")
def finished_job(stack):
    """An array job of three children; moto's Batch without Docker ends them at once."""
    return submit(
        client("batch"), job_queue=stack.job_queue, job_definition=stack.job_definition, size=3
    ).job_id


def test_instance_of_an_attempt_is_found_through_ecs_and_ec2(stack):
    ec2, ecs = boto3.client("ec2"), boto3.client("ecs")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image,
        InstanceType="c4.4xlarge",
        MinCount=1,
        MaxCount=1,
        Placement={"AvailabilityZone": "us-east-1b"},
    )["Instances"][0]
    document = json.dumps({"instanceId": instance["InstanceId"]})
    registered = ecs.register_container_instance(
        cluster=stack.cluster_arn, instanceIdentityDocument=document
    )["containerInstance"]["containerInstanceArn"]
    now = instance["LaunchTime"]

    located = locate_instances(
        ecs, ec2, [Attempt("job:0", 1, now, now, container_instance_arn=registered)]
    )

    assert (located[0].instance_type, located[0].zone) == ("c4.4xlarge", "us-east-1b")


def test_cost_of_a_finished_job_uses_spot_history_and_the_offline_table(finished_job, tmp_path):
    report = job_cost(
        client,
        job_id=finished_job,
        region="us-east-1",
        # moto's attempts name no container instance
        given=Given(instance_type="c4.4xlarge", zone="us-east-1a"),
    )

    assert len(report.costs) == 3  # one attempt per child
    assert {c.attempt.job_id for c in report.costs} == {f"{finished_job}:{i}" for i in range(3)}
    # moto answers the Pricing API with 500: the offline table priced On-Demand
    assert report.ondemand_source == "offline table"
    assert all(c.ondemand_per_hour == 0.796 for c in report.costs)
    assert all(c.spot_per_hour is not None for c in report.costs)  # moto's placeholder history
    assert "3 of 3 attempts priced" in report.render()
    assert write_chart(report.costs, tmp_path / "cost.png").stat().st_size > 1000


def test_logs_show_each_childs_lines_labelled_and_in_time_order(finished_job):
    batch, logs = client("batch"), client("logs")
    group = unique("/batchspot/jobs")  # the stack's log group (Terraform creates it)
    logs.create_log_group(logGroupName=group)
    now = int(time.time() * 1000)
    for index in (2, 0):
        child = batch.describe_jobs(jobs=[f"{finished_job}:{index}"])["jobs"][0]
        stream = child["container"]["logStreamName"]
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": now + index, "message": f"hello from {index}"}],
        )
    lines: list[str] = []

    assert show_logs(batch, logs, job_id=finished_job, log_group=group, emit=lines.append) == 2
    assert [line.split(" ", 2)[2] for line in lines] == [
        "[child 0] hello from 0",
        "[child 2] hello from 2",
    ]
    one: list[str] = []
    show_logs(
        batch, logs, job_id=finished_job, log_group=group, index=2, follow=True, emit=one.append
    )
    assert [line.split(" ", 2)[2] for line in one] == ["[child 2] hello from 2"]
