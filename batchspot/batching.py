"""Batch messages: many sources in one message, cut within SQS's size limit, the same way twice.

A batch message (``worker.messages.WorkBatch``) names up to ``--batch-size`` sources, so that
millions of small objects do not each pay a message and a result PUT. The seeder groups each
ordered stream of sources (a paginator's, an inventory file's, a saved listing) on its own
(``batchspot.sources.Group``): the groups then depend only on that stream's order, never on how
concurrent streams happen to interleave, so seeding the same listing again forms the same
batches, and ``seed --skip-done`` finds each stored batch's key
(``worker.keys.derive_batch_key``) from the listing alone.

A message closes before the source that would take it past ``size`` sources or ``max_bytes``
of UTF-8; a source whose message alone is over ``max_bytes`` still gets a message of its own,
which the seeder then reports as a failure instead of sending it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from batchspot.sources import Source
from worker.keys import Recipe, derive_batch_key
from worker.limits import MAX_MESSAGE_BYTES, utf8_len
from worker.messages import CONTRACT_VERSION, MAX_BATCH_ITEMS, WorkItem, parse_input_format

_SEPARATOR = ", "


@dataclass(frozen=True)
class SourceBatch:
    """One batch message: its sources, in listing order, and its body."""

    sources: tuple[Source, ...]
    body: str

    def __len__(self) -> int:
        """Return the sources it names (how ``batchspot.sources.interleave`` weighs a group)."""
        return len(self.sources)

    def result_key(self, output_prefix: str, recipe: Recipe) -> str:
        """Return the key its worker will store the batch's result under, from listed ETags."""
        items = (
            WorkItem(s.bucket, s.key, parse_input_format(None, s.key), etag=s.etag)
            for s in self.sources
        )
        return derive_batch_key(output_prefix, items, recipe)


def _item_text(source: Source) -> str:
    return json.dumps(
        {"bucket": source.bucket, "key": source.key, "etag": source.etag}, ensure_ascii=False
    )


@dataclass(frozen=True)
class Batching:
    """How to group sources: at most ``size`` in a message of at most ``max_bytes``.

    ``query`` is carried once per message, for all its sources.
    """

    size: int
    max_bytes: int = MAX_MESSAGE_BYTES
    query: str | None = None

    def __post_init__(self) -> None:
        """Refuse limits the worker or SQS would not take, before anything is listed."""
        if not 1 <= self.size <= MAX_BATCH_ITEMS:
            raise ValueError(f"--batch-size must be 1 to {MAX_BATCH_ITEMS}, got {self.size}")
        if not 1 <= self.max_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(
                f"--batch-bytes must be 1 to {MAX_MESSAGE_BYTES:,} (SQS's 1 MiB), "
                f"got {self.max_bytes:,}"
            )
        head, tail = self._envelope()
        if utf8_len(head + tail) >= self.max_bytes:
            raise ValueError(
                f"the query alone makes every batch message longer than {self.max_bytes:,} "
                "bytes; shorten the query or raise --batch-bytes"
            )

    def _envelope(self) -> tuple[str, str]:
        """Return the text before and after the items, so a body is sized as it is built."""
        fields: dict[str, object] = {"version": CONTRACT_VERSION}
        if self.query:
            fields["query"] = self.query
        text = json.dumps({**fields, "items": []}, ensure_ascii=False)
        return text[:-2], text[-2:]  # '..."items": [' and ']}'

    def group(self, sources: Iterable[Source]) -> Iterator[SourceBatch]:
        """Yield the batch messages of one ordered stream of sources (a ``Group``)."""
        head, tail = self._envelope()
        empty = utf8_len(head) + utf8_len(tail)
        batch: list[Source] = []
        texts: list[str] = []
        size = empty
        for source in sources:
            text = _item_text(source)
            grown = utf8_len(text) + (utf8_len(_SEPARATOR) if texts else 0)
            if texts and (len(texts) == self.size or size + grown > self.max_bytes):
                yield SourceBatch(tuple(batch), head + _SEPARATOR.join(texts) + tail)
                batch, texts, size = [], [], empty
                grown = utf8_len(text)
            batch.append(source)
            texts.append(text)
            size += grown
        if texts:
            yield SourceBatch(tuple(batch), head + _SEPARATOR.join(texts) + tail)


def items_in(body: str) -> int:
    """How many sources a seeded message names: a batch's items, else one.

    Asked only of the few bodies SQS refused, to count the items they held.
    """
    document = json.loads(body)
    return len(document["items"]) if "items" in document else 1
