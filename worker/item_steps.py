"""The steps one source goes through, alone in its message or as one item of a batch.

A lone item (``worker.process``) and a batch's item (``worker.batch_process``) are queried, run
through the custom code and classed when they fail in exactly the same way; only where the
result goes differs (its own object, or one line of the batch's object). So those steps live
here once, and so does the :class:`Outcome` both report.
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
from worker.keys import Recipe
from worker.messages import WorkItem
from worker.output import OutputTooLarge, ResultStore
from worker.query import (
    QueryError,
    QueryLimitExceeded,
    QueryRequest,
    QueryResult,
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
    # The items the message names (a batch's sources), and those of them stored as failure
    # lines: what the tallies, the log line and its metrics count.
    items: int = 1
    failed_lines: int = 0
    # A batch's sources: a batch that fails for the last time records a failure for each.
    sources: tuple[str, ...] = ()

    def item_counts(self) -> dict[str, int]:
        """Return the message's items by outcome: a failed batch fails all its items' results."""
        ok = self.items - self.failed_lines if self.kind == "ok" else 0
        return {
            "items_ok": ok,
            "items_failed": self.items - ok if self.kind in ("ok", "failed") else 0,
            "items_already_done": self.items if self.kind == "already-done" else 0,
        }


@dataclass(frozen=True)
class Services:
    """The clients and collaborators one item needs."""

    s3: Any
    store: ResultStore
    handler: Handler


class ItemTimeout(Exception):
    """The item's work ran past ITEM_TIMEOUT_SECONDS."""


class OutputKeyError(ValueError):
    """No key S3 would accept can hold this item's result; no retry changes that."""


def failure(error: Exception) -> Outcome:
    """Class why an item (or a batch's write) failed: for good, throttled, or worth a retry."""
    if isinstance(error, (QueryUnsupported, QueryLimitExceeded, OutputKeyError)):
        return Outcome("failed", str(error), permanent=True)
    if isinstance(error, (QueryError, HandlerError, OutputTooLarge, ItemTimeout)):
        return Outcome("failed", str(error), throttled=isinstance(error, QueryThrottled))
    if isinstance(error, ClientError):
        return Outcome(
            "failed",
            describe(error),
            permanent=error.operation_name in _WRITES
            and error_code(error) in PERMANENT_WRITE_CODES,
            throttled=is_throttling(error),
        )
    if isinstance(error, BotoCoreError):
        return Outcome("failed", f"AWS call failed: {error}")
    return Outcome("failed", f"unexpected {type(error).__name__}: {error}")


def read_source(
    item: WorkItem,
    recipe: Recipe,
    config: Config,
    s3: Any,
    fields: dict[str, Any],
    deadline: float | None,
) -> tuple[QueryResult, str]:
    """Start the item's query; return its rows (streamed as pulled) and the ETag being read.

    The result is keyed by the version actually read: a source overwritten since it was queued
    must not have its new rows stored under the old version's key. The local engine knows the
    ETag it reads (and holds it with If-Match across ranges); S3 Select's engine asks the
    source before the query and checks it is unchanged after. Only an empty object (no range
    to read) leaves it unknown, and a HEAD tells it.
    """
    request = QueryRequest(
        bucket=item.bucket,
        key=item.key,
        sql=recipe.query,
        input=item.input,
        rows_format=config.rows_format,
        deadline=deadline,
    )
    # The rows stream from here to the handler (and on to the result) as the query produces
    # them; its failures surface wherever they are pulled, as QueryErrors.
    result = run_query(s3, request, config.query_engine)
    fields["engine"] = result.engine
    etag = result.etag or source_etag(s3, item)
    if item.etag and etag.strip('"') != item.etag.strip('"'):
        fields["queued_etag"] = item.etag
    return result, etag


def check_in_time(deadline: float | None) -> None:
    """Refuse to store what the custom code returned after the item's deadline.

    The item was already failed at its deadline and its message given back: a result stored
    now would make it both stored and retried (or dead-lettered).
    """
    if deadline is not None and time.monotonic() > deadline:
        raise ItemTimeout("the custom code returned after the item's deadline; not stored")


def run_metadata(config: Config, attempt: int, handler_name: str, since: float) -> dict[str, str]:
    """Return the metadata every result carries: who stored it, on which receive, with what."""
    return {
        "job-id": config.job_id,
        "array-index": "" if config.array_index is None else str(config.array_index),
        "attempt": str(attempt),
        "job-attempt": str(config.attempt),
        # A command line may hold newlines and non-ASCII: HTTP headers take neither.
        "handler": quote(handler_name, safe=":/ "),
        "duration-ms": str(round((time.monotonic() - since) * 1000)),
    }


def source_etag(s3: Any, item: WorkItem) -> str:
    """Return the source's current ETag (one HEAD)."""
    return s3.head_object(Bucket=item.bucket, Key=item.key)["ETag"]


def source_etag_if_readable(s3: Any, item: WorkItem) -> str | None:
    """Return the source's ETag, or None where HEAD cannot say why (a 404 has no body).

    The query that follows then fails with the precise reason (NoSuchKey, NoSuchBucket).
    """
    try:
        return source_etag(s3, item)
    except ClientError:
        return None
