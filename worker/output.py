"""Stores results in S3 so that the first writer wins and a retry never stores twice.

Every write carries ``If-None-Match: *``: S3 refuses to replace an existing key, so two workers
that got the same message (SQS is at-least-once; a Spot host vanished mid-item) end with one
result, written once. A result larger than one part streams as a multipart upload whose
completion carries the same condition.

When two such writes of a key overlap, S3 may answer one of them ``409
ConditionalRequestConflict`` instead of 412 (S3 API Reference, PutObject and
CompleteMultipartUpload, ``If-None-Match``: "On a 409 failure you should retry the upload";
for a multipart upload, "re-initiate the multipart upload with CreateMultipartUpload and
re-upload each part"). A 409 says nothing about the item, so it must not spend a receive: the
store HEADs the key, and if the other writer's result is there the item is done, as after a
412; if not, it writes again (a few times, with backoff), a multipart upload from its start.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from botocore.exceptions import ClientError

from worker.errors import error_code
from worker.logs import log

PART_BYTES = 8 * 1024 * 1024
# Writes of one result that S3 may answer 409, before the 409 fails the item (a receive spent).
CONFLICT_ATTEMPTS = 5
# The first pause after a 409, doubled after each, drawn with full jitter ("Exponential Backoff
# And Jitter", AWS Architecture Blog) so that two writers that met do not meet again: at most
# 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s over all attempts.
CONFLICT_PAUSE_SECONDS = 0.1


class OutputTooLarge(Exception):
    """The custom code produced more than ``MAX_OUTPUT_BYTES``."""


def _is_precondition_failure(error: ClientError) -> bool:
    return error_code(error) in {"PreconditionFailed", "412"}


def _is_conflict(error: ClientError) -> bool:
    return error_code(error) == "ConditionalRequestConflict"


class ResultStore:
    """Writes and checks results in the output bucket."""

    def __init__(self, s3: Any, max_bytes: int) -> None:
        """Use ``s3`` for every call; refuse outputs above ``max_bytes``."""
        self._s3 = s3
        self._max_bytes = max_bytes

    def exists(self, bucket: str, key: str) -> bool | None:
        """Whether a result is already stored; None when S3 will not say.

        Checked on redelivery and after a 409 only, to save calls. Without ``s3:ListBucket``
        (the job role has none) S3 answers HEAD of a missing key with 403, not 404 (HeadObject
        API reference), so 403 means "unknown": the caller goes on, and ``If-None-Match: *`` on
        the write still refuses a second result.
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
            return self._settled(bucket, key, lambda: self._put(bucket, key, first, metadata))
        # A 409 comes at the completion, once every part has passed: the parts are kept on
        # disk as they go, so that the upload can start again from them.
        with tempfile.TemporaryFile() as kept:
            passing = _kept(itertools.chain([first, second], parts), kept)
            # The first attempt takes the parts as they come; every later one, from the disk.
            attempts = itertools.chain([passing], iter(lambda: _replayed(kept), None))
            return self._settled(
                bucket, key, lambda: self._multipart(bucket, key, next(attempts), metadata)
            )

    def write_file(
        self, bucket: str, key: str, file: IO[bytes], metadata: dict[str, str]
    ) -> tuple[bool, int]:
        """Store a result already on disk (a batch's lines) unless one exists; (written, bytes).

        Every attempt reads its parts from ``file`` itself, so a batch's lines are never
        copied: on a tmpfs, each copy would be charged to the container's memory.
        """
        size = file.seek(0, 2)
        if size > self._max_bytes:
            raise self._too_large()
        if size <= PART_BYTES:
            file.seek(0)
            body = file.read()
            return self._settled(bucket, key, lambda: self._put(bucket, key, body, metadata))
        return self._settled(
            bucket, key, lambda: self._multipart(bucket, key, _replayed(file), metadata)
        )

    def _settled(
        self, bucket: str, key: str, attempt: Callable[[], tuple[bool, int]]
    ) -> tuple[bool, int]:
        """Run ``attempt`` (one whole write) until S3 stops answering it 409, within bounds.

        After each 409 the key is checked: the other writer's result there means the item is
        done (False, as after a 412); a 403 (no ListBucket: S3 will not say) or a 404 means
        write again, and that write's own If-None-Match refuses a result stored meanwhile.
        """
        pause = CONFLICT_PAUSE_SECONDS
        for _ in range(CONFLICT_ATTEMPTS - 1):
            try:
                return attempt()
            except _Conflict as conflict:
                stored = self.exists(bucket, key) is True
                log("write-conflict", output=f"s3://{bucket}/{key}", stored_by_another=stored)
                if stored:
                    return False, conflict.size
            time.sleep(random.uniform(0, pause))
            pause *= 2
        try:
            return attempt()
        except _Conflict as conflict:
            raise conflict.error from None

    def _put(
        self, bucket: str, key: str, body: bytes, metadata: dict[str, str]
    ) -> tuple[bool, int]:
        try:
            self._s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                IfNoneMatch="*",
                ContentType="application/json",
                Metadata=metadata,
            )
        except ClientError as error:
            if _is_precondition_failure(error):
                return False, len(body)
            if _is_conflict(error):
                raise _Conflict(error, len(body)) from None
            raise
        return True, len(body)

    def _multipart(
        self, bucket: str, key: str, parts: Iterable[bytes], metadata: dict[str, str]
    ) -> tuple[bool, int]:
        upload_id = self._s3.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType="application/json", Metadata=metadata
        )["UploadId"]
        completed: list[dict[str, Any]] = []
        size = 0
        try:
            for number, body in enumerate(parts, start=1):
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
            if _is_conflict(error):
                raise _Conflict(error, size) from None
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
                raise self._too_large()
            buffer += chunk
            while len(buffer) >= PART_BYTES:
                yield bytes(buffer[:PART_BYTES])
                del buffer[:PART_BYTES]
        if buffer or total == 0:
            yield bytes(buffer)

    def _too_large(self) -> OutputTooLarge:
        return OutputTooLarge(
            f"output exceeds MAX_OUTPUT_BYTES={self._max_bytes} bytes; not stored"
        )


class _Conflict(Exception):
    """S3 answered a write 409 ConditionalRequestConflict; ``size`` bytes were offered."""

    def __init__(self, error: ClientError, size: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.size = size


def _kept(parts: Iterable[bytes], file: IO[bytes]) -> Iterator[bytes]:
    """Yield ``parts``, writing each to ``file`` first."""
    for part in parts:
        file.write(part)
        yield part


def _replayed(file: IO[bytes]) -> Iterator[bytes]:
    """Yield the parts :func:`_kept` wrote, again: every part but the last is PART_BYTES."""
    file.seek(0)
    while part := file.read(PART_BYTES):
        yield part
