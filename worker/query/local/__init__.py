"""The local engine: S3 Select's results without S3 Select, by streaming the object.

sqlglot parses the SQL (:mod:`.sql`), ranged GETs stream and decode the object
(:mod:`.reader`), the plan runs record by record (:mod:`.evaluator`) and the output is written
as S3 Select writes it (:mod:`.serialise`). Memory stays bounded by one fetched range, one
record and the output, and time linear in the bytes read, whatever the input (:mod:`.caps`);
``LIMIT`` stops the fetching and the item's deadline stops the query.
"""

from __future__ import annotations

from typing import Any

from worker.query import Deadline, QueryRequest, QueryResult
from worker.query.local.evaluator import evaluate
from worker.query.local.reader import RangedObject, open_records
from worker.query.local.serialise import serialise
from worker.query.local.sql import compile_query

ENGINE = "local"


def run(s3: Any, request: QueryRequest) -> QueryResult:
    """Run ``request`` here; raise QueryUnsupported before any read if the SQL is beyond us.

    Raises QueryTimeout once ``request.deadline`` passes, and a QueryError naming the cap for
    any input or result past the caps of :mod:`.caps`.
    """
    plan = compile_query(request.sql)
    deadline = Deadline(request.deadline)
    source = RangedObject(s3, request.bucket, request.key)
    with open_records(source, request.input, deadline) as records:
        text = serialise(evaluate(plan, records, deadline), request.rows_format)
    return QueryResult(
        text=text, engine=ENGINE, bytes_scanned=source.bytes_fetched, etag=source.etag
    )
