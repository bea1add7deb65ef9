"""The S3 Select engine: ``SelectObjectContent``, the event stream joined into text."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from worker.query import QueryError, QueryRefused, QueryRequest, QueryResult

# Error codes with which S3 (and its emulators) say "S3 Select is not available to you",
# as opposed to "this query or object is wrong".
REFUSAL_CODES = frozenset(
    {"MethodNotAllowed", "NotImplemented", "InternalFailure", "AccessDeniedException"}
)


def run(s3: Any, request: QueryRequest) -> QueryResult:
    """Run the query through S3 Select."""
    output = {"JSON": {"RecordDelimiter": "\n"}} if request.rows_format == "json" else {"CSV": {}}
    try:
        response = s3.select_object_content(
            Bucket=request.bucket,
            Key=request.key,
            Expression=request.sql,
            ExpressionType="SQL",
            InputSerialization=request.input.to_s3select(),
            OutputSerialization=output,
        )
        parts: list[bytes] = []
        scanned = 0
        for event in response["Payload"]:
            if "Records" in event:
                parts.append(event["Records"]["Payload"])
            elif "Stats" in event:
                scanned = event["Stats"]["Details"].get("BytesScanned", 0)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", str(error))
        kind = QueryRefused if code in REFUSAL_CODES else QueryError
        raise kind(f"S3 Select failed: {code}: {message}") from error
    return QueryResult(text=b"".join(parts).decode("utf-8"), engine="s3select", bytes_scanned=scanned)
