"""An in-process S3 (moto's mock) for the query engine's unit tests.

The query engine's unit tests need an object store that answers ranged GETs and S3 Select
quickly, thousands of times; moto's in-process mock does that without a server. The
integration tests use moto's and LocalStack's servers over HTTP instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import boto3
from moto import mock_aws


@contextlib.contextmanager
def in_memory_bucket(bucket: str, objects: dict[str, bytes] | None = None) -> Iterator[Any]:
    """Yield an S3 client on moto's in-process mock with ``bucket`` holding ``objects``."""
    with mock_aws():
        client = boto3.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=bucket)
        for key, body in (objects or {}).items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
        yield client
