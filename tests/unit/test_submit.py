from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from batchspot.queued_items import items_per_message, record
from batchspot.submit import (
    FinalStep,
    SubmitError,
    auto_size,
    code_version,
    parse_env,
    resolve_size,
)
from worker.final import FinalSettings, load_final


def test_auto_size_is_one_child_per_target_messages():
    assert auto_size(queued=1001, per_worker=100, max_vcpus=256, vcpus_per_child=4) == 11


def test_auto_size_is_capped_by_the_compute_environment():
    # 64 vCPUs hold 16 children of 4 vCPUs: more would wait in RUNNABLE
    assert auto_size(queued=100_000, per_worker=100, max_vcpus=64, vcpus_per_child=4) == 16


def test_auto_size_never_exceeds_the_array_limit_nor_goes_below_one():
    assert auto_size(10**9, 1, 10**6, 1) == 10_000
    assert auto_size(1, 100, 2, 4) == 1


def test_env_overrides_parse_and_keep_equals_in_values():
    assert parse_env(["S3_QUERY_LIMIT=10", "HANDLER=pkg.mod:fn", "X=a=b"]) == {
        "S3_QUERY_LIMIT": "10",
        "HANDLER": "pkg.mod:fn",
        "X": "a=b",
    }
    with pytest.raises(SubmitError, match="KEY=VALUE"):
        parse_env(["NOEQUALS"])


@pytest.mark.parametrize("size", ["0", "10001", "-3", "many"])
def test_explicit_size_outside_batch_limits_is_refused(size):
    with pytest.raises(SubmitError, match="--size"):
        resolve_size(size, sqs=None, batch=None, queue_url="", job_queue="", job_definition="")


def test_tolerate_failures_is_a_percentage_refused_before_submitting():
    with pytest.raises(SubmitError, match="--tolerate-failures must be a percentage"):
        FinalStep("batchspot-final", tolerate_failures=150)


ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot:latest"
DIGEST = "sha256:" + "a" * 64


def _clients(image: str) -> tuple[Any, Any]:
    """Batch answering one job definition that runs ``image``; ECR knowing ``latest``'s digest."""
    batch, ecr = (
        boto3.client(
            name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        for name in ("batch", "ecr")
    )
    definition = {
        "jobDefinitionName": "batchspot",
        "jobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/batchspot:1",
        "revision": 1,
        "type": "container",
        "containerProperties": {"image": image},
    }
    batch_stub, ecr_stub = Stubber(batch), Stubber(ecr)
    batch_stub.add_response("describe_job_definitions", {"jobDefinitions": [definition]})
    if image == ECR_IMAGE:
        ecr_stub.add_response(
            "describe_images",
            {"imageDetails": [{"imageDigest": DIGEST}]},
            {
                "registryId": "123456789012",
                "repositoryName": "batchspot",
                "imageIds": [{"imageTag": "latest"}],
            },
        )
    batch_stub.activate()
    ecr_stub.activate()
    return batch, ecr


def test_code_version_names_an_ecr_tag_by_its_digest():
    """``latest`` moves with each push; its digest names the code the children will run."""
    assert code_version(*_clients(ECR_IMAGE), "batchspot") == (
        f"123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot@{DIGEST}"
    )


def test_code_version_of_an_image_outside_ecr_is_its_reference():
    assert (
        code_version(*_clients("public.ecr.aws/x/y:1.2"), "batchspot") == "public.ecr.aws/x/y:1.2"
    )


def test_the_final_job_is_told_to_tolerate_pending_items_only_when_asked():
    started = datetime(2026, 1, 1, tzinfo=UTC)
    assert "TOLERATE_PENDING" not in FinalStep("batchspot-final").environment("job-1", started)
    told = FinalStep("batchspot-final", tolerate_pending=True).environment("job-1", started)
    assert told["TOLERATE_PENDING"] == "true"


def test_the_final_job_is_told_the_seeds_items_per_message_when_they_are_known(tmp_path):
    """It counts the queues' messages and cannot see the seeds (seeded.json) to say their items."""
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/work"
    record(queue, messages=15, items=1005, fresh=True, state_dir=tmp_path)
    ratio = items_per_message(queue, tmp_path)
    started = datetime(2026, 1, 1, tzinfo=UTC)
    told = FinalStep("batchspot-final", items_per_message=ratio).environment("job-1", started)
    _, settings = load_final({"SQS_QUEUE_URL": queue, "OUTPUT_BUCKET": "out", **told})
    assert settings.items_per_message == 67
    unknown = FinalStep("batchspot-final").environment("job-1", started)
    assert load_final({"SQS_QUEUE_URL": queue, "OUTPUT_BUCKET": "out", **unknown})[1] == (
        FinalSettings()
    ), "not told: the final step says only the bound"


def test_the_seeds_record_how_many_items_a_queues_message_names(tmp_path):
    """submit --size auto counts items: what seed sent to this queue, reset once it was empty."""
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/work"
    assert items_per_message(queue, tmp_path) == 1.0, "nothing recorded: one item a message"
    record(queue, messages=10, items=1000, fresh=True, state_dir=tmp_path)
    record(queue, messages=5, items=5, fresh=False, state_dir=tmp_path)  # a per-item seed added
    assert items_per_message(queue, tmp_path) == 1005 / 15
    record(queue, messages=2, items=200, fresh=True, state_dir=tmp_path)  # the queue had drained
    assert items_per_message(queue, tmp_path) == 100
    assert items_per_message(queue + "-other", tmp_path) == 1.0
