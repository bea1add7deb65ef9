"""ResultStore against the emulator's S3: the first writer wins, and no upload is left behind.

Two workers can hold the same message (SQS delivers at least once; a Spot host vanishes after
the store but before the delete), so every way of storing must refuse to replace a result,
and a refused or failed multipart upload must not leave parts billed in the bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from worker.output import PART_BYTES, OutputTooLarge, ResultStore

METADATA = {"job-id": "job-1", "attempt": "1"}
# Bigger than one part, so the store takes the multipart path: one full part and a tail.
LARGE = PART_BYTES + 1024


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh output bucket."""
    name = f"out-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def stored(s3: Any, bucket: str, key: str) -> bytes:
    """The body stored at ``key``."""
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def open_uploads(s3: Any, bucket: str) -> list[str]:
    """Keys of multipart uploads started and neither completed nor aborted."""
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_the_first_small_result_wins_and_the_second_is_refused(s3: Any, bucket: str) -> None:
    store = ResultStore(s3, max_bytes=LARGE * 2)
    assert store.write(bucket, "results/a.json", [b'{"first": ', b"1}"], METADATA) == (True, 12)
    # S3 answers the second put 412 PreconditionFailed; the store reports "not written".
    assert store.write(bucket, "results/a.json", [b'{"second": 2}'], METADATA) == (False, 13)
    assert stored(s3, bucket, "results/a.json") == b'{"first": 1}'
    assert s3.head_object(Bucket=bucket, Key="results/a.json")["Metadata"] == METADATA


def test_a_multipart_result_does_not_replace_a_stored_one(s3: Any, bucket: str) -> None:
    store = ResultStore(s3, max_bytes=LARGE * 2)
    assert store.write(bucket, "results/b.json", [b"small"], METADATA)[0]
    written, size = store.write(bucket, "results/b.json", [b"x" * LARGE], METADATA)
    assert (written, size) == (False, LARGE)
    assert stored(s3, bucket, "results/b.json") == b"small"
    assert open_uploads(s3, bucket) == [], "the refused upload must be aborted"


def test_a_result_stored_while_parts_upload_wins_over_the_multipart_completion(
    s3: Any, bucket: str
) -> None:
    """The race of two holders: the other one stores between our parts and our completion."""
    store = ResultStore(s3, max_bytes=LARGE * 2)

    def chunks_of_a_slow_writer() -> Iterator[bytes]:
        yield b"y" * PART_BYTES
        yield b"y" * PART_BYTES
        # Parts 1 and 2 are uploaded by now; the other holder stores before our completion.
        assert ResultStore(s3, max_bytes=LARGE).write(
            bucket, "results/c.json", [b"the other holder"], METADATA
        ) == (True, 16)
        yield b"tail"

    written, size = store.write(bucket, "results/c.json", chunks_of_a_slow_writer(), METADATA)
    assert (written, size) == (False, 2 * PART_BYTES + 4)
    assert stored(s3, bucket, "results/c.json") == b"the other holder"
    assert open_uploads(s3, bucket) == []


def test_a_multipart_result_is_stored_whole_with_its_metadata(s3: Any, bucket: str) -> None:
    store = ResultStore(s3, max_bytes=LARGE * 2)
    assert store.write(bucket, "results/d.json", [b"z" * LARGE], METADATA) == (True, LARGE)
    assert stored(s3, bucket, "results/d.json") == b"z" * LARGE
    head = s3.head_object(Bucket=bucket, Key="results/d.json")
    assert (head["Metadata"], head["ContentType"]) == (METADATA, "application/json")
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize(
    ("max_bytes", "expected"),
    [
        pytest.param(3 * PART_BYTES, RuntimeError, id="output-breaks-off"),
        pytest.param(2 * PART_BYTES + 10, OutputTooLarge, id="cap-passed-in-part-3"),
    ],
)
def test_a_multipart_upload_that_fails_midway_is_aborted_and_stores_nothing(
    s3: Any, bucket: str, max_bytes: int, expected: type[Exception]
) -> None:
    store = ResultStore(s3, max_bytes=max_bytes)

    def chunks() -> Iterator[bytes]:
        yield b"p" * PART_BYTES
        yield b"p" * PART_BYTES
        # Parts 1 and 2 are uploaded while the rest is produced.
        yield b"p" * 20
        raise RuntimeError("the custom code's output broke off")

    with pytest.raises(expected):
        store.write(bucket, "results/e.json", chunks(), METADATA)
    assert open_uploads(s3, bucket) == [], "parts left behind are billed until cleaned up"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
