"""Fetch a source object's rows as S3 Select would return them, whichever engine runs.

The worker calls :func:`run_query` and nothing else from this package. The engine is chosen by
``QUERY_ENGINE``: ``s3select`` asks S3, ``local`` streams the object and evaluates the SQL here,
``auto`` tries S3 Select first and falls back to the local engine for the life of the process
once S3 Select is refused (closed to new AWS accounts since July 2024, absent from LocalStack's
free edition, incomplete in moto).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from worker.messages import InputFormat

RowsFormat = Literal["json", "csv"]
EngineName = Literal["auto", "s3select", "local"]
# Rows stream from the engine to the custom code; only where they must become one string (a
# Python HANDLER's argument, auto's comparison of two engines) is it held, and building it
# holds it about twice: ~55 MiB of process plus 2 x 32 MiB stays inside the original job's
# 128 MiB. Counted in UTF-8 bytes, as the custom code receives it.
MAX_RESULT_BYTES = 32 << 20


class QueryError(Exception):
    """The item's query failed (missing object, bad SQL, access denied); other items go on."""


class QueryRefused(QueryError):
    """S3 Select itself is unavailable here; ``auto`` switches to the local engine on this."""


class QueryThrottled(QueryError):
    """S3 kept answering SlowDown past botocore's retries; the item itself is fine."""


class QueryLimitExceeded(QueryError):
    """The input breaks one of the engine's limits: record size, nesting, decompression, result.

    The same object breaks it on every retry, so the item fails for good.
    """


class QueryUnsupported(QueryError):
    """The local engine cannot run this query; retrying cannot help.

    The SQL or the input format is beyond it; the message names the construct.
    """


class QueryTimeout(QueryError):
    """The query was still running at the item's deadline; the engines stop at their next check."""


class Deadline:
    """An item's deadline as the engines check it, and the records read so far for the message.

    ``check`` is called between units of bounded work (a line, a JSON record, a window of a LIKE
    search, an S3 Select event), so a query stops within one such unit of the deadline.
    """

    def __init__(self, at: float | None) -> None:
        self._at = at
        self.records = 0

    def check(self) -> None:
        """Raise :class:`QueryTimeout` once ``time.monotonic()`` has reached the deadline."""
        if self._at is not None and time.monotonic() >= self._at:
            raise QueryTimeout(f"query passed the item's deadline after {self.records} records")


def result_too_large() -> QueryLimitExceeded:
    """Return the error for a result past :data:`MAX_RESULT_BYTES`, whichever engine ran."""
    return QueryLimitExceeded(
        f"the query's result passed MAX_RESULT_BYTES ({MAX_RESULT_BYTES >> 20} MiB); "
        f"select fewer records (LIMIT) or fewer fields"
    )


@dataclass(frozen=True)
class QueryRequest:
    """One query against one source object."""

    bucket: str
    key: str
    sql: str
    input: InputFormat
    rows_format: RowsFormat = "json"
    # The item's deadline as a ``time.monotonic()`` value; None: no deadline.
    deadline: float | None = None


class QueryResult:
    """The rows as S3 Select's JSON-lines or CSV output, streamed as the engine produces them.

    ``chunks()`` yields the serialised text in pieces (whole records from the local engine,
    event payloads from S3 Select) while the engine reads, so a ``SELECT *`` of any size is
    never held whole; the query's deadline and caps are enforced as they are pulled, and its
    errors (:class:`QueryError`) surface from the iteration. ``etag`` is the source version
    being read, known before the first chunk wherever the engine can know it. The stream is
    read once; ``close()`` stops an unfinished query and releases its connection.
    """

    def __init__(
        self,
        chunks: Iterable[str],
        engine: str,
        etag: str | None = None,
        scanned: Callable[[], int] = lambda: 0,
    ) -> None:
        """Wrap an engine's chunk stream; ``scanned`` reports the bytes it has read so far."""
        self._chunks = iter(chunks)
        self._scanned = scanned
        self._text: str | None = None
        self.engine = engine
        self.etag = etag
        self.chars = 0  # characters yielded so far: the log's ``bytes_in`` once consumed

    @classmethod
    def of_text(
        cls, text: str, engine: str, etag: str | None = None, bytes_scanned: int = 0
    ) -> QueryResult:
        """Wrap a result already held as one string (auto's checked answer)."""
        return cls((text,), engine, etag, lambda: bytes_scanned)

    def chunks(self) -> Iterator[str]:
        """Yield the rows' text once, in order, running the query as it is pulled."""
        for chunk in self._chunks:
            self.chars += len(chunk)
            yield chunk

    @property
    def text(self) -> str:
        """The whole result as one string, read on first use; a QueryError past the cap."""
        if self._text is None:
            self._text = join_capped(self.chunks())
        return self._text

    @property
    def bytes_scanned(self) -> int:
        """The bytes the engine has read (or S3 Select reported) so far."""
        return self._scanned()

    def close(self) -> None:
        """Stop the query if it is still running (a generator's ``finally`` runs now)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def join_capped(chunks: Iterable[str]) -> str:
    """Join streamed rows into one string, refusing past :data:`MAX_RESULT_BYTES` as they come."""
    pieces: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk) if chunk.isascii() else len(chunk.encode("utf-8"))
        if size > MAX_RESULT_BYTES:
            raise result_too_large()
        pieces.append(chunk)
    return "".join(pieces)


def run_query(s3: Any, request: QueryRequest, engine: EngineName = "auto") -> QueryResult:
    """Run ``request`` with the chosen engine; raise :class:`QueryError` on failure.

    Safe to call from many threads at once: ``auto``'s process-wide decision is locked.
    """
    from worker.query import auto, local, s3select

    if engine == "s3select":
        return s3select.run(s3, request)
    if engine == "local":
        return local.run(s3, request)
    if engine == "auto":
        return auto.AUTO.run(s3, request)
    raise QueryError(f"unknown query engine {engine!r}; use auto, s3select or local")
