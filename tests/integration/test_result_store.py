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
from botocore.exceptions import ClientError

from batchspot.awsrules import Faults, RulesLayer, aws_rules
from batchspot.emulators import Emulator
from worker.errors import error_code
from worker.output import CONFLICT_ATTEMPTS, PART_BYTES, OutputTooLarge, ResultStore

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


# S3 API Reference, PutObject and CompleteMultipartUpload, request header If-None-Match: "If a
# conflicting operation occurs during the upload S3 returns a 409 ConditionalRequestConflict
# response. On a 409 failure you should retry the upload" (PutObject); "... you should
# re-initiate the multipart upload with CreateMultipartUpload and re-upload each part"
# (CompleteMultipartUpload). moto never answers 409: the AWS rules layer does, at a set rate.
EVERY_WRITE_CONFLICTS = Faults(conditional_conflict_rate=1.0)
# random.Random(1) draws 0.13, then 0.85: the first conditional write gets 409, the next not.
FIRST_WRITE_CONFLICTS = Faults(conditional_conflict_rate=0.5, seed=1)
CONFLICT = "s3.conditional-conflict"


def store_through(layer: RulesLayer, max_bytes: int = LARGE * 2) -> ResultStore:
    """A store whose S3 client reaches the emulator through the rules layer, as the worker's."""
    return ResultStore(Emulator("rules", layer.endpoint).client("s3"), max_bytes=max_bytes)


@pytest.mark.parametrize("size", [12, LARGE], ids=["put", "multipart"])
def test_a_409_with_no_result_stored_is_written_again_within_the_call(
    emulator: Emulator, s3: Any, bucket: str, size: int
) -> None:
    """409 ConditionalRequestConflict, the key still empty: the whole upload is tried again.

    The item's receive is not spent on a conflict that says nothing about it; a multipart
    upload starts over from CreateMultipartUpload, as the API reference asks.
    """
    body = b"r" * size
    with aws_rules(emulator.endpoint, faults=FIRST_WRITE_CONFLICTS) as layer:
        written = store_through(layer).write(bucket, "results/f.json", [body], METADATA)
    assert layer.injected[CONFLICT] == 1
    assert written == (True, size)
    assert stored(s3, bucket, "results/f.json") == body
    assert s3.head_object(Bucket=bucket, Key="results/f.json")["Metadata"] == METADATA
    assert open_uploads(s3, bucket) == [], "the upload the 409 ended must be aborted"


@pytest.mark.parametrize("size", [12, LARGE], ids=["put", "multipart"])
def test_a_409_while_another_holder_stored_the_result_means_already_done(
    emulator: Emulator, s3: Any, bucket: str, size: int
) -> None:
    """409 ConditionalRequestConflict, the other writer's result there: done, as after a 412.

    Before, the 409 failed the item, and on its last receive sent it to the dead-letter queue
    although its result was stored.
    """
    assert ResultStore(s3, max_bytes=LARGE).write(
        bucket, "results/g.json", [b"the other holder"], METADATA
    ) == (True, 16)
    with aws_rules(emulator.endpoint, faults=EVERY_WRITE_CONFLICTS) as layer:
        written = store_through(layer).write(bucket, "results/g.json", [b"s" * size], METADATA)
    assert written == (False, size)
    assert layer.injected[CONFLICT] == 1, "a result found stored is not written again"
    assert stored(s3, bucket, "results/g.json") == b"the other holder"
    assert open_uploads(s3, bucket) == []


def test_409s_that_go_on_fail_the_write_after_a_bounded_number_of_tries(
    emulator: Emulator, s3: Any, bucket: str
) -> None:
    with aws_rules(emulator.endpoint, faults=EVERY_WRITE_CONFLICTS) as layer:
        store = store_through(layer)
        with pytest.raises(ClientError) as raised:
            store.write(bucket, "results/h.json", [b"x" * LARGE], METADATA)
    assert error_code(raised.value) == "ConditionalRequestConflict"
    assert layer.injected[CONFLICT] == CONFLICT_ATTEMPTS
    assert open_uploads(s3, bucket) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
