"""The S3 Select engine: ``SelectObjectContent``, the event stream joined into text.

The stream is read event by event, so the item's deadline is checked between events and the
result's size against :data:`worker.query.MAX_RESULT_BYTES` as it arrives.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from worker.errors import error_code, is_throttling
from worker.query import (
    MAX_RESULT_BYTES,
    Deadline,
    QueryError,
    QueryRefused,
    QueryRequest,
    QueryResult,
    QueryThrottled,
    result_too_large,
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
    """Run the query through S3 Select; output beyond the query's LIMIT is cut off."""
    text, scanned = select_text(s3, request)
    text = cap_records(text, request.rows_format, declared_limit(request.sql))
    return QueryResult(text=text, engine=ENGINE, bytes_scanned=scanned)


def select_text(s3: Any, request: QueryRequest) -> tuple[str, int]:
    """S3 Select's answer exactly as it came (not capped) and the bytes it scanned."""
    output = {"JSON": {"RecordDelimiter": "\n"}} if request.rows_format == "json" else {"CSV": {}}
    deadline = Deadline(request.deadline)
    parts: list[bytes] = []
    size = scanned = 0
    ended = False
    try:
        response = s3.select_object_content(
            Bucket=request.bucket,
            Key=request.key,
            Expression=request.sql,
            ExpressionType="SQL",
            InputSerialization=request.input.to_s3select(),
            OutputSerialization=output,
        )
        for event in response["Payload"]:
            deadline.check()
            if "Records" in event:
                parts.append(event["Records"]["Payload"])
                size += len(parts[-1])
                if size > MAX_RESULT_BYTES:
                    raise result_too_large()
            elif "Stats" in event:
                scanned = event["Stats"]["Details"].get("BytesScanned", 0)
            elif "End" in event:
                ended = True
    except ClientError as error:
        raise _classify(error, request) from error
    if not ended:
        # AWS: without the End event the result may be incomplete.
        raise QueryError("S3 Select's answer stopped before its End event; retry the item")
    try:
        text = b"".join(parts).decode("utf-8")
    except UnicodeDecodeError as error:
        raise QueryError(f"S3 Select returned text that is not UTF-8: {error.reason}") from None
    return text, scanned


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
