"""Stores results in S3 so that the first writer wins and a retry never stores twice.

Every write carries ``If-None-Match: *``: S3 refuses to replace an existing key, so two workers
that got the same message (SQS is at-least-once; a Spot host vanished mid-item) end with one
result, written once. A result larger than one part streams as a multipart upload whose
completion carries the same condition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from worker.errors import error_code

PART_BYTES = 8 * 1024 * 1024


class OutputTooLarge(Exception):
    """The custom code produced more than ``MAX_OUTPUT_BYTES``."""


def _is_precondition_failure(error: ClientError) -> bool:
    return error_code(error) in {"PreconditionFailed", "412"}


class ResultStore:
    """Writes and checks results in the output bucket."""

    def __init__(self, s3: Any, max_bytes: int) -> None:
        """Use ``s3`` for every call; refuse outputs above ``max_bytes``."""
        self._s3 = s3
        self._max_bytes = max_bytes

    def exists(self, bucket: str, key: str) -> bool | None:
        """Whether a result is already stored; None when S3 will not say.

        Checked on redelivery only, to save calls. Without ``s3:ListBucket`` (the job role has
        none) S3 answers HEAD of a missing key with 403, not 404 (HeadObject API reference), so
        403 means "unknown": the caller goes on, and ``If-None-Match: *`` on the write still
        refuses a second result.
        """
        try:
            self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            code = error_code(error)
            if code in {"404", "NoSuchKey", "NotFound"}:
                return False
            if code in {"403", "AccessDenied", "Forbidden"}:
                return None
            raise
        return True

    def write(
        self, bucket: str, key: str, chunks: Iterable[bytes], metadata: dict[str, str]
    ) -> tuple[bool, int]:
        """Store the result unless one exists; return (written, bytes)."""
        parts = self._parts(chunks)
        first = next(parts, b"")
        second = next(parts, None)
        if second is None:
            try:
                self._s3.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=first,
                    IfNoneMatch="*",
                    ContentType="application/json",
                    Metadata=metadata,
                )
            except ClientError as error:
                if _is_precondition_failure(error):
                    return False, len(first)
                raise
            return True, len(first)
        return self._multipart(bucket, key, first, second, parts, metadata)

    def _multipart(
        self,
        bucket: str,
        key: str,
        first: bytes,
        second: bytes,
        rest: Iterator[bytes],
        metadata: dict[str, str],
    ) -> tuple[bool, int]:
        upload_id = self._s3.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType="application/json", Metadata=metadata
        )["UploadId"]
        completed: list[dict[str, Any]] = []
        size = 0
        try:
            for number, body in enumerate([first, second], start=1):
                completed.append(self._upload_part(bucket, key, upload_id, number, body))
                size += len(body)
            for number, body in enumerate(rest, start=3):
                completed.append(self._upload_part(bucket, key, upload_id, number, body))
                size += len(body)
            self._s3.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": completed},
                IfNoneMatch="*",
            )
        except ClientError as error:
            self._abort(bucket, key, upload_id)
            if _is_precondition_failure(error):
                return False, size
            raise
        except BaseException:
            self._abort(bucket, key, upload_id)
            raise
        return True, size

    def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        response = self._s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError):
            self._s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

    def _parts(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Regroup chunks into parts of ``PART_BYTES``, enforcing the size cap as they pass."""
        buffer = bytearray()
        total = 0
        for chunk in chunks:
            total += len(chunk)
            if total > self._max_bytes:
                raise OutputTooLarge(
                    f"output exceeds MAX_OUTPUT_BYTES={self._max_bytes} bytes; not stored"
                )
            buffer += chunk
            while len(buffer) >= PART_BYTES:
                yield bytes(buffer[:PART_BYTES])
                del buffer[:PART_BYTES]
        if buffer or total == 0:
            yield bytes(buffer)
