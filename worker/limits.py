"""AWS's size limits, in one place, and the means to stay within them.

The emulators (moto, LocalStack) accept what AWS refuses, so a limit broken here passes every
local test and fails only in production. The limits, as AWS documents them:

* an S3 object key is at most 1,024 bytes of UTF-8, prefix included (``KeyTooLongError``):
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html
* user-defined S3 metadata is at most 2 KB, "the sum of the number of bytes in the UTF-8
  encoding of each key and value" (``MetadataTooLarge``):
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html#UserMetadata
* an SQS message is at most 1 MiB, 1,048,576 bytes; a ``SendMessageBatch`` carries at most 10
  entries, whose bodies total at most 1 MiB (``BatchRequestTooLong``):
  https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
  https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
  (ReceiveMessage returns, and every other SQS batch call takes, at most 10 as well);
* Batch's DescribeJobs and ECS's DescribeContainerInstances take at most 100 ids, CloudWatch
  Logs' FilterLogEvents at most 100 stream names:
  https://docs.aws.amazon.com/batch/latest/APIReference/API_DescribeJobs.html
  https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_FilterLogEvents.html

A list longer than a call takes is sent in :func:`chunked` slices.

Where a value we derive (an output key, a metadata value) would break a limit, :func:`shorten`
keeps its readable start and appends a hash of the whole: still deterministic, so a retry
derives the same value, and still distinct for distinct long values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048
MAX_MESSAGE_BYTES = 1_048_576
MAX_BATCH_BYTES = 1_048_576
MAX_BATCH_ENTRIES = 10
MAX_DESCRIBE_IDS = 100

_DIGEST_CHARS = 16  # 64 bits: distinct long values collide with negligible probability
SHORTENED_MIN_BYTES = 1 + _DIGEST_CHARS  # "-" and the digest, with no readable start left


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Yield ``items`` in order, in slices of at most ``size``: one slice per AWS call."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def utf8_len(text: str) -> int:
    """Return the size AWS counts: bytes of UTF-8, not characters."""
    return len(text.encode("utf-8"))


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Return the longest start of ``text`` within ``max_bytes`` of UTF-8.

    The cut falls on a character boundary: a multi-byte character that does not fit whole is
    left out, never split (a split one is no longer valid UTF-8).
    """
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def shorten(text: str, max_bytes: int) -> str:
    """Return ``text`` if it fits in ``max_bytes`` of UTF-8, else ``<start>-<digest>``.

    The start keeps the value recognisable to an operator; the digest, of the whole text, keeps
    two values that differ only beyond the start apart. ``max_bytes`` must leave room for the
    digest (:data:`SHORTENED_MIN_BYTES`).
    """
    if utf8_len(text) <= max_bytes:
        return text
    if max_bytes < SHORTENED_MIN_BYTES:
        raise ValueError(
            f"cannot shorten to {max_bytes} bytes: a shortened value needs at least "
            f"{SHORTENED_MIN_BYTES} bytes for its digest"
        )
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    return f"{truncate_utf8(text, max_bytes - SHORTENED_MIN_BYTES)}-{digest}"


def metadata_bytes(metadata: dict[str, str]) -> int:
    """Return the size S3 holds against :data:`MAX_METADATA_BYTES`: keys and values in UTF-8."""
    return sum(utf8_len(name) + utf8_len(value) for name, value in metadata.items())


def fit_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Return ``metadata`` within S3's 2 KB, shortening its longest values if it is larger.

    A single long value (the source's URL-quoted key can reach 3 KB alone) would otherwise make
    S3 refuse the whole result with ``MetadataTooLarge``. Longest values are shortened first,
    each just enough (see :func:`shorten`), so the small fields (ETag, job id, attempt) are kept
    whole unless the long ones cannot make room on their own; no field is ever dropped.
    """
    fitted = dict(metadata)
    for name in sorted(fitted, key=lambda name: utf8_len(fitted[name]), reverse=True):
        excess = metadata_bytes(fitted) - MAX_METADATA_BYTES
        size = utf8_len(fitted[name])
        if excess <= 0 or size <= SHORTENED_MIN_BYTES:
            break
        fitted[name] = shorten(fitted[name], max(size - excess, SHORTENED_MIN_BYTES))
    if metadata_bytes(fitted) > MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata of {len(fitted)} fields cannot be shortened to S3's "
            f"{MAX_METADATA_BYTES} bytes; its names alone take "
            f"{sum(utf8_len(name) for name in fitted)}"
        )
    return fitted
