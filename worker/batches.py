"""A batch's one result: JSON lines, one per item, with the item's result or its failure.

Millions of small objects cannot each pay a PUT ($5 per million at list price, nine tenths of
the per-item cost); a batch message (``worker.messages.WorkBatch``) names up to
:data:`~worker.messages.MAX_BATCH_ITEMS` sources, and its worker stores one object under
:func:`worker.keys.derive_batch_key`, written with ``If-None-Match: *`` like every result, so
a redelivered batch is never stored twice. Like Distributed Map's ItemBatcher with a
ResultWriter, but the lines are the items' own results, not a child execution's output.

Each line is one of::

    {"source": "s3://bucket/key", "etag": "<version read>", "result": <the code's JSON>}
    {"source": "s3://bucket/key", "error": "<why the item failed for good>"}

The object's metadata carries the run's fields as an item result does (job id, attempt), plus
:data:`ITEMS_METADATA` and :data:`FAILED_ITEMS_METADATA`, so that the manifest and
``invoke status`` count items from one HEAD per batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

ITEMS_METADATA = "items"
FAILED_ITEMS_METADATA = "failed-items"


def one_line(chunk: bytes) -> bytes:
    """Return a chunk of valid JSON with its line breaks made spaces, so it stays one line.

    In valid JSON a raw line break can only be whitespace (inside strings it is escaped), so
    the value is unchanged; and chunk by chunk, a large result is never held whole.
    """
    return chunk.replace(b"\r", b" ").replace(b"\n", b" ")


def result_line(source: str, etag: str, result: Iterable[bytes]) -> Iterator[bytes]:
    """Yield one item's line, its JSON ``result`` (valid, checked by the handler) streamed in."""
    head = json.dumps({"source": source, "etag": etag.strip('"')}, ensure_ascii=False)
    yield head[:-1].encode() + b', "result": '
    for chunk in result:
        yield one_line(chunk)
    yield b"}\n"


def failure_line(source: str, reason: str) -> bytes:
    """Return one item's line when it failed for good: its source and why."""
    return (json.dumps({"source": source, "error": reason}, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class BatchLine:
    """One line of a batch's result, read back: a result, or a failure's reason."""

    source: str
    etag: str | None = None
    result: Any = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the item failed for good (its line holds a reason, not a result)."""
        return self.error is not None


def read_lines(lines: Iterable[bytes]) -> Iterator[BatchLine]:
    """Parse a batch result's lines (``StreamingBody.iter_lines()``), one item at a time."""
    for line in lines:
        if line.strip():
            document = json.loads(line)
            yield BatchLine(
                source=document["source"],
                etag=document.get("etag"),
                result=document.get("result"),
                error=document.get("error"),
            )
