"""The worker's policy as Terraform renders it (batchspot.policy), checked statement by statement.

These renders are what the IAM-enforcing integration test runs the worker under, so a wrong
document here would make that test prove the wrong thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchspot.policy import render_worker_policy
from batchspot.terraform_cli import TerraformError

pytestmark = pytest.mark.terraform

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:work"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory, terraform_cli) -> Path:
    """One root config for every render here: init links the provider once, then only checks.

    ``terraform_cli`` only makes a missing terraform binary a skip (a failure under CI).
    """
    return tmp_path_factory.mktemp("worker-policy")


def render(work_dir: Path, output_prefix: str = "results/", buckets: list[str] | None = None):
    return render_worker_policy(
        QUEUE_ARN, "in", ["out", "extra"] if buckets is None else buckets, output_prefix, work_dir
    )


def as_set(value: str | list[str]) -> set[str]:
    """IAM JSON writes a single action or resource as a string, several as a list."""
    return {value} if isinstance(value, str) else set(value)


def by_sid(document: dict[str, Any], element: str) -> dict[str, set[str]]:
    return {s["Sid"]: as_set(s[element]) for s in document["Statement"]}


@pytest.fixture(scope="module")
def document(work_dir: Path) -> dict[str, Any]:
    return render(work_dir)


def test_grants_exactly_the_workers_calls(document) -> None:
    assert document["Version"] == "2012-10-17"
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in document["Statement"])
    assert by_sid(document, "Action") == {
        "ConsumeWorkQueue": {
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        },
        "ReadInput": {"s3:GetObject"},
        "WriteResults": {"s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"},
    }


def test_names_only_the_queue_the_input_and_the_output_prefixes(document) -> None:
    assert by_sid(document, "Resource") == {
        "ConsumeWorkQueue": {QUEUE_ARN},
        "ReadInput": {"arn:aws:s3:::in/*"},
        "WriteResults": {"arn:aws:s3:::out/results/*", "arn:aws:s3:::extra/results/*"},
    }


def test_never_lists(document) -> None:
    actions = set().union(*by_sid(document, "Action").values())
    assert not {a for a in actions if a.startswith("s3:List") or "*" in a}, actions


def test_output_prefix_and_buckets_follow_the_inputs(work_dir: Path) -> None:
    changed = render(work_dir, output_prefix="runs/7/", buckets=["out", "out"])
    assert by_sid(changed, "Resource")["WriteResults"] == {"arn:aws:s3:::out/runs/7/*"}


def test_a_failing_render_raises_terraform_error(work_dir: Path) -> None:
    with pytest.raises(TerraformError, match=r"terraform plan failed[\s\S]*output bucket"):
        render(work_dir, buckets=[])
