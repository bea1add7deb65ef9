"""The S3 Select engine: ``SelectObjectContent``, its event stream passed on as it arrives.

The stream is read event by event while the custom code consumes the rows, so the item's
deadline is checked between events and no whole result is held. S3 Select names no version,
so the source's ETag is read with a HEAD before the query (the result's key is known before
the first row) and checked again once the rows are read: an object overwritten meanwhile fails
the item rather than storing one version's rows under another's key.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from worker.errors import error_code, is_throttling
from worker.query import (
    Deadline,
    QueryError,
    QueryRefused,
    QueryRequest,
    QueryResult,
    QueryThrottled,
    join_capped,
)
from worker.query.limit import cap_records, declared_limit

ENGINE = "s3select"
# Error codes with which S3 (and its emulators) say "S3 Select is not available to you",
# as opposed to "this query or object is wrong". LocalStack's free edition answers
# InternalFailure ("not included in your current license plan or has not yet been emulated").
REFUSAL_CODES = frozenset(
    {"MethodNotAllowed", "NotImplemented", "InternalFailure", "AccessDeniedException"}
)
REFUSAL_STATUSES = frozenset({405, 501})


def run(s3: Any, request: QueryRequest) -> QueryResult:
    """Start the query on S3 Select; output beyond the query's LIMIT is cut off.

    Refusals and bad requests raise here; failures inside the event stream, and a source
    changed while it was read, raise from the result's iteration.
    """
    etag = _etag(s3, request)
    selection = _Selection(s3, request)

    def chunks() -> Iterator[str]:
        yield from cap_records(
            selection.records(), request.rows_format, declared_limit(request.sql)
        )
        if _etag(s3, request) != etag:
            raise QueryError(
                f"s3://{request.bucket}/{request.key} was overwritten while S3 Select read it; "
                f"retry the item"
            )

    return QueryResult(chunks(), ENGINE, etag=etag, scanned=lambda: selection.scanned)


def select_text(s3: Any, request: QueryRequest) -> tuple[str, int]:
    """S3 Select's answer exactly as it came (not capped by LIMIT) and the bytes it scanned.

    The answer is one string, so it is refused past :data:`worker.query.MAX_RESULT_BYTES`.
    """
    selection = _Selection(s3, request)
    return join_capped(selection.records()), selection.scanned


class _Selection:
    """One ``SelectObjectContent`` call, made at once; its records are read on demand."""

    def __init__(self, s3: Any, request: QueryRequest) -> None:
        """Send the request; raise the classified QueryError if S3 refuses it."""
        self._request = request
        self.scanned = 0
        output = (
            {"JSON": {"RecordDelimiter": "\n"}} if request.rows_format == "json" else {"CSV": {}}
        )
        try:
            self._response = s3.select_object_content(
                Bucket=request.bucket,
                Key=request.key,
                Expression=request.sql,
                ExpressionType="SQL",
                InputSerialization=request.input.to_s3select(),
                OutputSerialization=output,
            )
        except ClientError as error:
            raise _classify(error, request) from error

    def records(self) -> Iterator[str]:
        """Yield the Records events' text as it arrives; the connection closes with this."""
        deadline = Deadline(self._request.deadline)
        # A character may be split between two events.
        decoder = codecs.getincrementaldecoder("utf-8")()
        ended = False
        payload = self._response["Payload"]
        try:
            for event in payload:
                deadline.check()
                if "Records" in event:
                    yield decoder.decode(event["Records"]["Payload"])
                elif "Stats" in event:
                    self.scanned = event["Stats"]["Details"].get("BytesScanned", 0)
                elif "End" in event:
                    ended = True
            decoder.decode(b"", final=True)
        except ClientError as error:
            raise _classify(error, self._request) from error
        except UnicodeDecodeError as error:
            raise QueryError(f"S3 Select returned text that is not UTF-8: {error.reason}") from None
        finally:
            payload.close()
        if not ended:
            # AWS: without the End event the result may be incomplete.
            raise QueryError("S3 Select's answer stopped before its End event; retry the item")


def _etag(s3: Any, request: QueryRequest) -> str:
    try:
        return s3.head_object(Bucket=request.bucket, Key=request.key)["ETag"]
    except ClientError as error:
        raise _classify(error, request) from error


def _classify(error: ClientError, request: QueryRequest) -> QueryError:
    details = error.response.get("Error", {})
    code = error_code(error)
    message = details.get("Message", str(error))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    source = f"s3://{request.bucket}/{request.key}"
    if code in REFUSAL_CODES or status in REFUSAL_STATUSES:
        return QueryRefused(f"S3 Select is not available here: {code}: {message}")
    if is_throttling(error):
        return QueryThrottled(f"S3 Select on {source} was throttled: {code}: {message}")
    return QueryError(f"S3 Select on {source} failed: {code}: {message}")
