"""Fetch a source object's rows as S3 Select would return them, whichever engine runs.

The worker calls :func:`run_query` and nothing else from this package. The engine is chosen by
``QUERY_ENGINE``: ``s3select`` asks S3, ``local`` streams the object and evaluates the SQL here,
``auto`` tries S3 Select first and falls back to the local engine for the life of the process
once S3 Select is refused (closed to new AWS accounts since July 2024, absent from LocalStack's
free edition, incomplete in moto).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from worker.messages import InputFormat

RowsFormat = Literal["json", "csv"]
EngineName = Literal["auto", "s3select", "local"]


class QueryError(Exception):
    """The item's query failed (missing object, bad SQL, access denied); other items go on."""


class QueryRefused(QueryError):
    """S3 Select itself is unavailable here; ``auto`` switches to the local engine on this."""


class QueryThrottled(QueryError):
    """S3 kept answering SlowDown past botocore's retries; the item itself is fine."""


class QueryUnsupported(QueryError):
    """The local engine cannot run this SQL (the message names the construct)."""


@dataclass(frozen=True)
class QueryRequest:
    """One query against one source object."""

    bucket: str
    key: str
    sql: str
    input: InputFormat
    rows_format: RowsFormat = "json"


@dataclass(frozen=True)
class QueryResult:
    """The rows, serialised as S3 Select's JSON-lines or CSV output, plus what was learnt."""

    text: str
    engine: str
    bytes_scanned: int = 0
    etag: str | None = None


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
