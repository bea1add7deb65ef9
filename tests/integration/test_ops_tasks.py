"""The operator tasks as typed: `invoke <task> --options` in a subprocess, on the emulator."""

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from batchspot_support.inventory_files import write_inventory
from tests.integration.ops_support import make_batch, make_queues, unique, use_emulator

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"

pytestmark = pytest.mark.moto_only


@pytest.fixture(scope="module", autouse=True)
def aws(emulator):
    with use_emulator(emulator):
        yield


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:9"}  # no engine there
    return subprocess.run(
        [str(INVOKE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def input_bucket(name: str, keys: list[str]) -> str:
    """Create a uniquely named bucket holding a one-row CSV at each key; return its name."""
    bucket = unique(name)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n")
    return bucket


def test_seed_submit_status_redrive_from_the_command_line():
    bucket = input_bucket("tasks-in", [f"in/{i}.csv" for i in range(12)])
    queue_url, dlq_url = make_queues("tasks")
    boto3.client("sqs").send_message(QueueUrl=dlq_url, MessageBody="dead letter")
    stack = make_batch("tasks")
    names = ["--job-queue", stack.job_queue]

    seeded = invoke("seed", "--bucket", bucket, "--queue-url", queue_url, "--prefix", "in/")
    assert seeded.returncode == 0, seeded.stderr
    assert "listed 12, skipped 0 already done, sent 12, failed 0" in seeded.stdout

    submitted = invoke(
        "submit", "--queue-url", queue_url, *names, "--job-definition", stack.job_definition,
        "--per-worker", "5", "--env", "S3_QUERY_LIMIT=10",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert "array job of 3 children" in submitted.stdout

    status = invoke("status", "--queue-url", queue_url, "--dlq-url", dlq_url, *names)
    assert status.returncode == 0, status.stderr
    assert "queue: 12 visible" in status.stdout and "dead-letter queue: 1" in status.stdout
    assert "3 children: SUCCEEDED 3" in status.stdout

    redriven = invoke("redrive", "--queue-url", queue_url, "--dlq-url", dlq_url)
    assert "moved 1 messages back" in redriven.stdout, redriven.stderr


def test_submit_auto_sizes_from_the_items_the_seeded_batches_name():
    """12 objects in batches of 4: 3 messages but 12 items, so 3 children of 5 items, not 1."""
    bucket = input_bucket("tasks-batch", [f"in/{i} é+.csv" for i in range(12)])
    queue_url, _ = make_queues("tasks-batch")
    stack = make_batch("tasks-batch")

    seeded = invoke(
        "seed", "--bucket", bucket, "--queue-url", queue_url, "--prefix", "in/",
        "--batch-size", "4",
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    assert "listed 12 items, skipped 0 already done, sent 12 items in 3 messages" in seeded.stdout

    submitted = invoke(
        "submit", "--queue-url", queue_url, "--job-queue", stack.job_queue,
        "--job-definition", stack.job_definition, "--per-worker", "5",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert "array job of 3 children" in submitted.stdout


def test_seed_from_an_inventory_from_the_command_line_and_a_tampered_one_refused():
    bucket = unique("tasks-inv")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    rows = [{"key": f"in/{i} +.csv", "size": 4, "e_tag": f"e{i}"} for i in range(5)]
    manifest = write_inventory(s3, bucket, bucket, rows, "CSV")
    options = ["--bucket", bucket, "--inventory", manifest, "--suffix", ".csv", "--dry-run"]

    seeded = invoke("seed", *options)
    assert seeded.returncode == 0, seeded.stderr
    assert "listed 5, skipped 0 already done, would send 5, failed 0" in seeded.stdout

    key = manifest.removeprefix(f"s3://{bucket}/")
    s3.put_object(
        Bucket=bucket, Key=key, Body=s3.get_object(Bucket=bucket, Key=key)["Body"].read() + b" "
    )
    refused = invoke("seed", *options)
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith(
        f"error: {manifest} does not match its manifest.checksum"
    )
    assert len(refused.stderr.strip().splitlines()) == 1

    no_inventory = invoke("seed", "--bucket", bucket, "--inventory", "latest", "--dry-run")
    assert (no_inventory.returncode, no_inventory.stderr.strip()) == (
        1,
        "error: the stack configures no inventory: deploy with --var "
        "input_inventory_frequency=Daily, or pass a manifest.json's s3:// URL",
    )


def test_cost_reproduces_the_write_up_from_the_command_line():
    result = invoke(
        "cost", "--seconds", "625", "--instance-type", "c4.4xlarge", "--spot-price", "0.2526",
        "--chart", "",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "On-Demand 0.1382 $ vs Spot 0.0439 $, 68% saved" in result.stdout


def test_operator_errors_are_one_line_not_a_traceback():
    size = invoke("submit", "--size", "0", "--job-queue", "q", "--job-definition", "d")
    assert (size.returncode, size.stderr.strip()) == (
        1,
        "error: --size must be auto or 1..10000, got '0'",
    )
    repository = boto3.client("ecr").create_repository(repositoryName=unique("push"))
    push = invoke("push", "--repository-url", repository["repository"]["repositoryUri"])
    assert push.returncode == 1
    assert push.stderr.startswith("error: No Docker engine is reachable at tcp://127.0.0.1:9")
    assert "Traceback" not in push.stderr
