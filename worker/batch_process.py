"""One batch message's life: each item run as a lone item is, one result object for them all.

Each item goes through the steps a lone item does (``worker.item_steps``: the batch's query,
the custom code, ITEM_TIMEOUT_SECONDS and the same limits), and its line
(``worker.batches``) streams to a temporary file as it is produced, so a batch is never held
in memory. /tmp is a tmpfs charged to the container's memory, so the lines of all the items
together obey MAX_OUTPUT_BYTES, as one result does. Then the file is stored once under
:func:`worker.keys.derive_batch_key`, through the same :class:`~worker.output.ResultStore`
(``If-None-Match: *``, 409s, multipart) as every result.

An item's failure decides the batch's fate by its class (:func:`worker.item_steps.failure`):

* permanent (unsupported SQL, a limit the source breaks): the item's failure line, and the
  other items go on;
* transient (a missing source that may yet come, the code failing): the batch's receive
  fails at that item and the batch is retried whole, since its one result must hold every
  item; throttling, like a lone item's, runs the batch again within the same receive. On the
  batch's last receive either becomes the item's failure line instead, so that one item that
  never heals does not send its healthy neighbours to the dead-letter queue.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import IO, Any

from worker.batches import FAILED_ITEMS_METADATA, ITEMS_METADATA, failure_line, result_line
from worker.config import Config
from worker.item_steps import (
    Outcome,
    Services,
    check_in_time,
    failure,
    read_source,
    run_metadata,
    source_etag_if_readable,
)
from worker.keys import derive_batch_key
from worker.limits import fit_metadata
from worker.messages import WorkBatch, WorkItem
from worker.output import OutputTooLarge


def process_batch(
    batch: WorkBatch,
    attempt: int,
    config: Config,
    services: Services,
    deadline: float | None,
    last_receive: bool,
) -> Outcome:
    """Run every item of ``batch`` and store their lines as one object; never raise."""
    run = _BatchRun(batch, attempt, config, services, deadline, last_receive)
    try:
        outcome = run.store()
    except Exception as error:  # the HEAD before, or the write after, the items
        outcome = failure(error)
    outcome.fields = {**run.fields, "bytes_in": run.bytes_in, **outcome.fields}
    outcome.items, outcome.failed_lines = len(batch.items), run.failed
    outcome.sources = tuple(item.source for item in batch.items)
    return outcome


@dataclass
class _BatchRun:
    """One receive of a batch: what it runs with, and its items' tallies as they go."""

    batch: WorkBatch
    attempt: int
    config: Config
    services: Services
    deadline: float | None
    last_receive: bool
    failed: int = 0  # items failed for good so far: their failure lines
    bytes_in: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def store(self) -> Outcome:
        """Run the items into lines on disk, then store them as the batch's one result."""
        config, services = self.config, self.services
        bucket = config.output_bucket
        recipe = config.recipe.for_message(self.batch.query, None)
        self.fields.update(source=self.batch.source, items=len(self.batch.items))
        if self.attempt > 1:
            # A redelivery: the batch may be stored already (its worker vanished before the
            # delete). The queued ETags name it with one HEAD; sources queued without theirs
            # are asked, as a lone item's is.
            queued = [self._versioned(item, item.etag) for item in self.batch.items]
            key = derive_batch_key(config.output_prefix, queued, recipe)
            if services.store.exists(bucket, key):
                return Outcome("already-done", fields={"output": f"s3://{bucket}/{key}"})
        started = time.monotonic()
        read: list[WorkItem] = []
        with tempfile.TemporaryFile() as file:
            lines = _Lines(file, config.max_output_bytes)
            for number, item in enumerate(self.batch.items):
                try:
                    etag: str | None = self._run_item(item, lines)
                except Exception as error:
                    outcome = failure(error)
                    if not (outcome.permanent or self.last_receive):
                        outcome.reason = f"item {number} ({item.source}): {outcome.reason}"
                        return outcome
                    lines.add([failure_line(item.source, outcome.reason or "")])
                    self.failed += 1
                    etag = None
                read.append(self._versioned(item, etag))
            key = derive_batch_key(config.output_prefix, read, recipe)
            self.fields["output"] = f"s3://{bucket}/{key}"
            metadata = {
                **run_metadata(config, self.attempt, services.handler.name, started),
                ITEMS_METADATA: str(len(self.batch.items)),
                FAILED_ITEMS_METADATA: str(self.failed),
            }
            check_in_time(self.deadline)
            written, size = services.store.write_file(bucket, key, file, fit_metadata(metadata))
        self.fields["bytes_out"] = size
        return Outcome("ok" if written else "already-done")

    def _run_item(self, item: WorkItem, lines: _Lines) -> str:
        """Run one item within its own ITEM_TIMEOUT_SECONDS and write its line; return its ETag."""
        deadline = time.monotonic() + self.config.item_timeout - self.config.settle_margin
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        recipe = self.config.recipe.for_message(item.query, item.input)
        read: dict[str, Any] = {}
        result, etag = read_source(item, recipe, self.config, self.services.s3, read, deadline)
        self.fields.setdefault("engine", read["engine"])  # the log line's, as a lone item's
        try:
            output = self.services.handler(result.chunks(), deadline)
            check_in_time(deadline)
            lines.add(result_line(item.source, etag, output.chunks()))
        finally:
            result.close()  # a failed item's query stops here, not when collected
            self.bytes_in += result.chars
        return etag

    def _versioned(self, item: WorkItem, etag: str | None) -> WorkItem:
        """Return ``item`` with the ETag its batch's key is derived from.

        The version read where the item ran; else the queued one; else the source's own (a
        HEAD); else none. A redelivery derives the key in the same order, so a batch stored
        with a failed item is still found.
        """
        etag = etag or item.etag or source_etag_if_readable(self.services.s3, item) or ""
        return replace(item, etag=etag)


class _Lines:
    """The batch's result lines, written to ``file`` as they stream, within ``max_bytes``."""

    def __init__(self, file: IO[bytes], max_bytes: int) -> None:
        self._file = file
        self._max_bytes = max_bytes

    def add(self, chunks: Iterable[bytes]) -> None:
        """Append one item's line; if it fails midway, leave no part of it behind."""
        start = self._file.tell()
        try:
            for chunk in chunks:
                if self._file.tell() + len(chunk) > self._max_bytes:
                    raise OutputTooLarge(
                        f"the batch's lines exceed MAX_OUTPUT_BYTES={self._max_bytes} bytes"
                    )
                self._file.write(chunk)
        except BaseException:
            self._file.seek(start)
            self._file.truncate()
            raise
