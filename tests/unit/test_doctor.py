"""`invoke doctor --job-id`: a job's children grouped by status and the reason Batch gives."""

import boto3
from botocore.stub import Stubber

from batchspot.doctor import explain_job

PARENT = {
    "jobId": "j",
    "jobName": "batchspot",
    "jobQueue": "q",
    "status": "RUNNABLE",
    "startedAt": 0,
    "jobDefinition": "d",
    "arrayProperties": {"size": 3},
}


def child(index: int, status: str, **details: object) -> dict:
    return {**PARENT, "jobId": f"j:{index}", "status": status, "arrayProperties": {}, **details}


def test_children_are_grouped_by_status_and_reason_most_common_first():
    batch = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x",
                         aws_secret_access_key="x")  # fmt: skip
    failed = child(
        2,
        "FAILED",
        statusReason="Essential container in task exited",
        attempts=[{"container": {"exitCode": 2}}],
    )
    with Stubber(batch) as stub:
        stub.add_response("describe_jobs", {"jobs": [PARENT]}, {"jobs": ["j"]})
        stub.add_response(
            "describe_jobs",
            {"jobs": [child(0, "RUNNABLE"), child(1, "RUNNABLE"), failed]},
            {"jobs": ["j:0", "j:1", "j:2"]},
        )
        lines = explain_job(batch, "j")

    assert lines == [
        "job j: 3 children",
        "  RUNNABLE x2: no reason given: see the compute environment, role, egress and size "
        "lines above",
        "  FAILED x1: Essential container in task exited (exit code 2)",
    ]
