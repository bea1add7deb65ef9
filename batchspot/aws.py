"""boto3 clients with BatchSpot's retry policy, and the queue set-up several runs share.

Every operator task builds its clients here so that throttling and transient errors are
handled the same way everywhere, by botocore's own retry modes rather than hand-written
loops. Endpoints come from boto3's standard ``AWS_ENDPOINT_URL`` variables, so the same code
talks to AWS or to a local emulator.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.config import Config

# "adaptive" adds client-side rate limiting on top of "standard" retries: right for tasks
# that fan out many calls (seed, redrive) and harmless for the others.
RETRY_MODE = "adaptive"
MAX_ATTEMPTS = 8


def client(
    service: str, *, pool: int = 10, attempts: int = MAX_ATTEMPTS, region: str | None = None
) -> Any:
    """Return a boto3 client that retries throttling and 5xx, sized for ``pool`` threads."""
    config = Config(
        retries={"mode": RETRY_MODE, "max_attempts": attempts},
        max_pool_connections=pool,
    )
    return boto3.client(service, config=config, region_name=region)


def queue_arn(sqs: Any, queue_url: str) -> str:
    """Return the ARN of the queue at ``queue_url``."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def create_queue_with_dlq(
    sqs: Any, name: str, visibility_timeout: int, max_receive_count: int
) -> tuple[str, str]:
    """Create ``name`` and ``name``-dlq with the redrive the Terraform queue module sets up.

    For runs that make their own queues on an emulator (chaos, tests); return both URLs.
    """
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    redrive = {"deadLetterTargetArn": queue_arn(sqs, dlq_url), "maxReceiveCount": max_receive_count}
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return queue_url, dlq_url
