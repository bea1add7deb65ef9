"""A job definition's image is checked against its ECR repository, by digest or by tag.

A missing image makes every child fail with CannotPullContainerError (Amazon ECS Developer
Guide, "CannotPullContainer task errors",
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_cannot_pull_image.html).
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from batchspot.image import missing_from_ecr

REPOSITORY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/batchspot"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def ecr():
    client = boto3.client(
        "ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        yield client, stub


def expect(stub: Stubber, image_id: dict[str, str], found: bool) -> None:
    request = {"registryId": "123456789012", "repositoryName": "batchspot", "imageIds": [image_id]}
    if found:
        stub.add_response("describe_images", {"imageDetails": [{"imageDigest": DIGEST}]}, request)
    else:
        stub.add_client_error("describe_images", "ImageNotFoundException", expected_params=request)


@pytest.mark.parametrize(
    ("image", "image_id"),
    [
        (f"{REPOSITORY}:latest", {"imageTag": "latest"}),
        (REPOSITORY, {"imageTag": "latest"}),
        (f"{REPOSITORY}@{DIGEST}", {"imageDigest": DIGEST}),
    ],
)
def test_an_image_ecr_holds_passes_and_one_it_lacks_is_named(ecr, image, image_id):
    client, stub = ecr
    expect(stub, image_id, found=True)
    assert missing_from_ecr(client, image) is None
    expect(stub, image_id, found=False)
    problem = missing_from_ecr(client, image)
    assert problem is not None and problem.startswith(
        f"the job definition's image {image} is not in ECR (ImageNotFoundException), so every "
        "child would fail with CannotPullContainerError"
    )
    stub.assert_no_pending_responses()


def test_an_image_outside_ecr_is_not_checked(ecr):
    client, stub = ecr
    assert missing_from_ecr(client, "public.ecr.aws/docker/library/python:3.12") is None
    stub.assert_no_pending_responses()
