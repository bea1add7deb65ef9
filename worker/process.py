"""One message's life once read: check, query, run the custom code, store, decide its fate.

The loop reads a body once (:func:`worker.messages.read_message`: up to 1 MiB of JSON) to
size its deadline, and hands what it read here, however many times the message runs.

:func:`process_message` never raises: every failure becomes an :class:`Outcome` with a reason,
so one bad input cannot stop the worker. What happens to the message (delete, give back now,
give back later) is the loop's business; this module only says which. A batch message's
items each go through the same steps (``worker.item_steps``), into one result
(``worker.batch_process``).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from worker.batch_process import process_batch
from worker.config import Config
from worker.item_steps import (
    Outcome,
    OutputKeyError,
    Services,
    check_in_time,
    failure,
    read_source,
    run_metadata,
    source_etag_if_readable,
)
from worker.keys import Recipe, check_output_key, derive_output_key
from worker.limits import fit_metadata
from worker.messages import Ignorable, Malformed, Message, WorkBatch, WorkItem

__all__ = ["Outcome", "Services", "message_items", "process_message"]


def message_items(message: Message) -> int:
    """How many items a message names: a batch's sources, else one (a malformed one too)."""
    return len(message.items) if isinstance(message, WorkBatch) else 1


def process_message(
    message: Message,
    attempt: int,
    config: Config,
    services: Services,
    deadline: float | None = None,
    last_receive: bool = False,
) -> Outcome:
    """Process one message, as :func:`worker.messages.read_message` read it; never raise.

    ``deadline`` (a ``time.monotonic()`` value) is when the message's work must have stopped;
    the query engine checks it between records and the custom code is cut off at it.
    ``last_receive``: no receive is left after this one (a batch then records its items'
    transient failures rather than dead-letter its healthy items with them).
    """
    started = time.monotonic()
    if isinstance(message, Malformed):
        return Outcome("failed", f"malformed message: {message.reason}", permanent=True)
    if isinstance(message, Ignorable):
        return Outcome("ignored", message.reason)
    if isinstance(message, WorkBatch):
        outcome = process_batch(message, attempt, config, services, deadline, last_receive)
    else:
        fields: dict[str, Any] = {"source": message.source}
        try:
            outcome = _process_item(message, attempt, config, services, fields, deadline)
        except Exception as error:
            outcome = failure(error)
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
        etag = etag or source_etag_if_readable(services.s3, item)
        key = _output_key(item, etag, config.output_prefix, recipe) if etag else None
        # None (S3 would not say: 403 without ListBucket) goes on like False; the write's
        # If-None-Match still refuses a second result.
        if key and services.store.exists(bucket, key):
            return Outcome("already-done", fields={"output": f"s3://{bucket}/{key}"})
    result, etag = read_source(item, recipe, config, services.s3, fields, deadline)
    key = _output_key(item, etag, config.output_prefix, recipe)
    fields["output"] = f"s3://{bucket}/{key}"
    handler_started = time.monotonic()
    output = services.handler(result.chunks(), deadline)
    metadata = {
        "source": quote(item.source, safe=":/"),
        "source-etag": etag.strip('"'),
        **run_metadata(config, attempt, services.handler.name, handler_started),
    }
    check_in_time(deadline)
    written, size = services.store.write(bucket, key, output.chunks(), fit_metadata(metadata))
    fields["bytes_in"] = result.chars
    fields["bytes_out"] = size
    return Outcome("ok" if written else "already-done")


def _output_key(item: WorkItem, etag: str, prefix: str, recipe: Recipe) -> str:
    if item.output_key:
        return item.output_key  # checked on arrival
    try:
        return derive_output_key(prefix, item.bucket, item.key, etag, recipe)
    except ValueError as error:
        raise OutputKeyError(str(error)) from None
