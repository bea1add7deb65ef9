"""Integration fixtures: one AWS emulator per session, reached over HTTP like real AWS.

``BATCHSPOT_TEST_EMULATOR`` picks it: ``moto`` (default; hosts everything, S3 Select included)
or ``localstack`` (faster SQS and S3, nothing else). For LocalStack,
``BATCHSPOT_LOCALSTACK_ENDPOINT`` reuses a running one (docker-compose); otherwise one is
started natively. Tests that need what only moto has are marked ``moto_only`` and skipped,
with the reason, under LocalStack. A reused LocalStack keeps state between runs, so tests
should name their queues and buckets uniquely.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localstack_client.session import Session as LocalStackSession

from batchspot.emulators import EMULATOR_ENV, Emulator, emulator_at

HERE = Path(__file__).parent
EMULATORS = ("moto", "localstack")


def chosen_emulator() -> str:
    """Return the emulator named by BATCHSPOT_TEST_EMULATOR, or stop the run if unknown."""
    name = os.environ.get("BATCHSPOT_TEST_EMULATOR", "").strip().lower() or "moto"
    if name not in EMULATORS:
        pytest.exit(f"BATCHSPOT_TEST_EMULATOR must be moto or localstack, got {name!r}", 4)
    return name


def pytest_report_header() -> str:
    """Say which emulator the integration tests will use, first thing in the output."""
    name = chosen_emulator()
    endpoint = os.environ.get("BATCHSPOT_LOCALSTACK_ENDPOINT", "started natively")
    return f"integration emulator: {name}" + (f" ({endpoint})" if name == "localstack" else "")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this folder's tests ``integration``; skip ``moto_only`` ones under LocalStack."""
    skip = pytest.mark.skip(
        reason="needs moto: LocalStack's free edition has no S3 Select, Batch, ECR or IAM"
    )
    localstack = chosen_emulator() == "localstack"
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
            if localstack and item.get_closest_marker("moto_only"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The session's emulator; its log is kept under pytest's temporary directory."""
    name = chosen_emulator()
    endpoint = os.environ.get("BATCHSPOT_LOCALSTACK_ENDPOINT", "").strip() or None
    logs = tmp_path_factory.mktemp("emulator-logs")
    with emulator_at(endpoint if name == "localstack" else None, logs, name) as running:
        yield running


@pytest.fixture(scope="session")
def aws_env(emulator: Emulator) -> dict[str, str]:
    """Variables to add to a subprocess's environment so its boto3 uses only the emulator."""
    return emulator.client_env()


def emulator_client(emulator: Emulator, service: str) -> Any:
    """A boto3 client on the emulator: LocalStack's built by localstack-client, as its users'."""
    if emulator.name != "localstack":
        return emulator.client(service)
    session = LocalStackSession(
        aws_access_key_id=EMULATOR_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=EMULATOR_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=EMULATOR_ENV["AWS_DEFAULT_REGION"],
        localstack_host=emulator.endpoint.removeprefix("http://"),
    )
    return session.client(service)


@pytest.fixture(scope="session")
def s3(emulator: Emulator) -> Any:
    """A boto3 S3 client on the emulator."""
    return emulator_client(emulator, "s3")


@pytest.fixture(scope="session")
def sqs(emulator: Emulator) -> Any:
    """A boto3 SQS client on the emulator."""
    return emulator_client(emulator, "sqs")


@pytest.fixture(scope="session")
def worker_policy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The job role's policy exactly as Terraform renders it, for every stack of the tests.

    The names are the patterns ``harness.make_stack`` draws from (``work-*``, ``in-*``,
    ``out-*``), so one plan serves the whole session.
    """
    from batchspot.policy import render_worker_policy

    return render_worker_policy(
        queue_arn="arn:aws:sqs:us-east-1:123456789012:work-*",
        input_bucket="in-*",
        output_buckets=["out-*"],
        output_prefix="results/",
        work_dir=tmp_path_factory.mktemp("worker-policy"),
    )


@pytest.fixture(scope="session")
def batch_rules(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """How AWS Batch ends and retries the worker's child, by the job definition Terraform
    renders (:mod:`batchspot.batchrules`)."""
    from batchspot.batchrules import batch_rules as render

    return render(tmp_path_factory.mktemp("job-definitions"))
