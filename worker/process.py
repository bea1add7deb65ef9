"""One message's life: parse, check, query, run the custom code, store, decide its fate.

:func:`process_message` never raises: every failure becomes an :class:`Outcome` with a reason,
so one bad input cannot stop the worker. What happens to the message (delete, give back now,
give back later) is the loop's business; this module only says which.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from worker.config import Config
from worker.errors import PERMANENT_WRITE_CODES, describe, error_code, is_throttling
from worker.handlers import Handler, HandlerError
from worker.keys import Recipe, check_output_key, derive_output_key
from worker.limits import fit_metadata
from worker.messages import Ignorable, MessageError, WorkItem, parse_message
from worker.output import OutputTooLarge, ResultStore
from worker.query import (
    QueryError,
    QueryLimitExceeded,
    QueryRequest,
    QueryThrottled,
    QueryUnsupported,
    run_query,
)

OutcomeKind = Literal["ok", "already-done", "ignored", "failed"]
# The calls that store a result: their permission and key errors are the item's for good.
_WRITES = frozenset({"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"})


@dataclass
class Outcome:
    """What became of one message, and the fields of its log line."""

    kind: OutcomeKind
    reason: str | None = None
    # A failure that no retry can cure (malformed message, a key S3 refuses, no permission to
    # write) goes back at once, so it reaches the dead-letter queue after maxReceiveCount
    # receives without waiting out a delay.
    permanent: bool = False
    # AWS asked us to slow down: nothing is wrong with the item, so the loop runs it again
    # within the same receive instead of spending one of its receives.
    throttled: bool = False
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Services:
    """The clients and collaborators one item needs."""

    s3: Any
    store: ResultStore
    handler: Handler


def process_message(
    body: str, attempt: int, config: Config, services: Services, deadline: float | None = None
) -> Outcome:
    """Process one message body; never raise.

    ``deadline`` (a ``time.monotonic()`` value) is when the item's work must have stopped;
    the query engine checks it between records and the custom code is cut off at it.
    """
    started = time.monotonic()
    try:
        parsed = parse_message(body)
    except MessageError as error:
        return Outcome("failed", f"malformed message: {error}", permanent=True)
    if isinstance(parsed, Ignorable):
        return Outcome("ignored", parsed.reason)
    fields: dict[str, Any] = {"source": parsed.source}
    try:
        outcome = _process_item(parsed, attempt, config, services, fields, deadline)
    except (QueryUnsupported, QueryLimitExceeded) as error:
        outcome = Outcome("failed", str(error), permanent=True)
    except (QueryError, HandlerError, OutputTooLarge, ItemTimeout) as error:
        outcome = Outcome("failed", str(error), throttled=isinstance(error, QueryThrottled))
    except ClientError as error:
        outcome = Outcome(
            "failed",
            describe(error),
            permanent=error.operation_name in _WRITES
            and error_code(error) in PERMANENT_WRITE_CODES,
            throttled=is_throttling(error),
        )
    except OutputKeyError as error:
        outcome = Outcome("failed", str(error), permanent=True)
    except BotoCoreError as error:
        outcome = Outcome("failed", f"AWS call failed: {error}")
    except Exception as error:
        outcome = Outcome("failed", f"unexpected {type(error).__name__}: {error}")
    outcome.fields = {**fields, **outcome.fields}
    outcome.fields["duration_ms"] = round((time.monotonic() - started) * 1000)
    return outcome


def _process_item(
    item: WorkItem,
    attempt: int,
    config: Config,
    services: Services,
    fields: dict[str, Any],
    deadline: float | None,
) -> Outcome:
    bucket = item.output_bucket or config.output_bucket
    if not config.output_bucket_allowed(bucket):
        return Outcome(
            "failed",
            f"output bucket {bucket!r} is not OUTPUT_BUCKET nor in ALLOWED_OUTPUT_BUCKETS",
            permanent=True,
        )
    if item.output_key:
        try:
            check_output_key(item.output_key, config.output_prefix)
        except ValueError as error:
            return Outcome("failed", f"refused output_key: {error}", permanent=True)
    recipe = config.recipe.for_message(item.query, item.input)
    etag = item.etag
    if attempt > 1:
        # A redelivery: the item may be done already (its worker vanished before the delete).
        # Only here is the extra HEAD worth paying for.
        etag = etag or _source_etag_if_readable(services.s3, item)
        key = _output_key(item, etag, config.output_prefix, recipe) if etag else None
        # None (S3 would not say: 403 without ListBucket) goes on like False; the write's
        # If-None-Match still refuses a second result.
        if key and services.store.exists(bucket, key):
            return Outcome("already-done", fields={"output": f"s3://{bucket}/{key}"})
    request = QueryRequest(
        bucket=item.bucket,
        key=item.key,
        sql=recipe.query,
        input=item.input,
        rows_format=config.rows_format,
        deadline=deadline,
    )
    # The rows stream from here to the handler (and, for rows-to-json, into the upload) as the
    # query produces them; its failures surface wherever they are pulled, as QueryErrors.
    result = run_query(services.s3, request, config.query_engine)
    fields["engine"] = result.engine
    # Key the result by the version actually read: a source overwritten since it was queued
    # must not have its new rows stored under the old version's key. The local engine knows
    # the ETag it read (and holds it with If-Match across ranges); S3 Select's engine asks the
    # source before the query and checks it is unchanged after. Only an empty object (no range
    # to read) leaves it unknown.
    etag = result.etag or _source_etag(services.s3, item)
    if item.etag and etag.strip('"') != item.etag.strip('"'):
        fields["queued_etag"] = item.etag
    key = _output_key(item, etag, config.output_prefix, recipe)
    fields["output"] = f"s3://{bucket}/{key}"
    handler_started = time.monotonic()
    output = services.handler(result.chunks(), deadline)
    metadata = {
        "source": quote(item.source, safe=":/"),
        "source-etag": etag.strip('"'),
        "job-id": config.job_id,
        "array-index": "" if config.array_index is None else str(config.array_index),
        "attempt": str(attempt),
        "job-attempt": str(config.attempt),
        # A command line may hold newlines and non-ASCII: HTTP headers take neither.
        "handler": quote(services.handler.name, safe=":/ "),
        "duration-ms": str(round((time.monotonic() - handler_started) * 1000)),
    }
    if deadline is not None and time.monotonic() > deadline:
        # The item was already failed at its deadline and its message given back: a result
        # stored now would make it both stored and retried (or dead-lettered).
        raise ItemTimeout("the custom code returned after the item's deadline; not stored")
    written, size = services.store.write(bucket, key, output.chunks(), fit_metadata(metadata))
    fields["bytes_in"] = result.chars
    fields["bytes_out"] = size
    return Outcome("ok" if written else "already-done")


class ItemTimeout(Exception):
    """The item's work ran past ITEM_TIMEOUT_SECONDS."""


class OutputKeyError(ValueError):
    """No key S3 would accept can hold this item's result; no retry changes that."""


def _output_key(item: WorkItem, etag: str, prefix: str, recipe: Recipe) -> str:
    if item.output_key:
        return item.output_key  # checked on arrival
    try:
        return derive_output_key(prefix, item.bucket, item.key, etag, recipe)
    except ValueError as error:
        raise OutputKeyError(str(error)) from None


def _source_etag(s3: Any, item: WorkItem) -> str:
    return s3.head_object(Bucket=item.bucket, Key=item.key)["ETag"]


def _source_etag_if_readable(s3: Any, item: WorkItem) -> str | None:
    """Return the source's ETag, or None where HEAD cannot say why (a 404 has no body).

    The query that follows then fails with the precise reason (NoSuchKey, NoSuchBucket).
    """
    try:
        return _source_etag(s3, item)
    except ClientError:
        return None
