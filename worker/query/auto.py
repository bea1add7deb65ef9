"""``QUERY_ENGINE=auto``: S3 Select where it is available and gives the right rows, else local.

The rule, for the life of the process (the local engine is always a correct answer, so every
doubt resolves towards it):

1. S3 Select refused (405/501, MethodNotAllowed, NotImplemented, not available to the account,
   LocalStack's InternalFailure): switch to the local engine.
2. Until S3 Select has shown it honours LIMIT, each item first checks it: S3 Select's raw
   answer to ``SELECT * FROM S3Object s LIMIT 1`` must be the object's first record, as the
   local engine reads it. More records (moto ignores LIMIT and adds a blank record after a
   final newline) or other rows: switch. The check is settled by the first object holding at
   least two records; on smaller objects it is repeated on the next item.
3. The first time each distinct query (SQL + input format + output format) succeeds on S3
   Select, the local engine runs it too and the answers are compared. Equal: that query is
   trusted on S3 Select from then on. Different, or S3 Select failed where the local engine
   succeeded (moto fails on WHERE): switch.
4. The local engine cannot run the query (SQL beyond its subset) or fails on the data: S3
   Select's answer is used as is, as there is nothing to check it against.

S3 Select's answer is cut to the query's LIMIT in every case. A switch is logged once, with
its reason. The cost on real AWS is, per process, one ``LIMIT 1`` S3 Select request plus one
ranged read for the LIMIT check, and one extra local run per distinct query (bounded by its
LIMIT when it has one). ``QUERY_ENGINE=s3select`` skips all of it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from dataclasses import replace
from typing import Any

from worker.logs import brief, log
from worker.query import (
    QueryError,
    QueryRefused,
    QueryRequest,
    QueryResult,
    QueryTimeout,
    QueryUnsupported,
    local,
    s3select,
)

LIMIT_PROBE = "SELECT * FROM S3Object s LIMIT 1"
LIMIT_PROBE_REFERENCE = "SELECT * FROM S3Object s LIMIT 2"


class AutoEngine:
    """The process-wide decision between S3 Select and the local engine; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local_reason: str | None = None
        self._trusted: set[tuple[str, Any, str]] = set()
        self._honours_limit = False

    @property
    def local_reason(self) -> str | None:
        """Why this process switched to the local engine, or None while it has not."""
        with self._lock:
            return self._local_reason

    @property
    def limit_settled(self) -> bool:
        """Whether S3 Select has shown it honours LIMIT (rule 2), on an object of 2+ records."""
        with self._lock:
            return self._honours_limit

    def run(self, s3: Any, request: QueryRequest) -> QueryResult:
        """Run ``request`` on the engine this process has settled on (see the module's rule)."""
        if self.local_reason is not None:
            return local.run(s3, request)
        signature = (request.sql, request.input, request.rows_format)
        try:
            selected = s3select.run(s3, request)
            if not self._is_trusted(signature):
                selected.text  # noqa: B018 - read whole now: it is compared, and fails here
        except QueryRefused as refusal:
            self._switch(str(refusal))
            return local.run(s3, request)
        except QueryTimeout:
            raise  # the item is out of time: no second engine
        except QueryError as failure:
            if self._is_trusted(signature):
                raise
            return self._after_failure(s3, request, failure)
        problem = self._check_limit(s3, request)
        if problem is not None:
            self._switch(problem)
            return local.run(s3, request)
        if self._is_trusted(signature):
            return selected
        return self._verify(s3, request, selected, signature)

    def _check_limit(self, s3: Any, request: QueryRequest) -> str | None:
        """Rule 2: the reason S3 Select cannot be trusted with LIMIT, or None."""
        with self._lock:
            if self._honours_limit:
                return None
        probe = replace(request, sql=LIMIT_PROBE, rows_format="json")
        try:
            answer, _ = s3select.select_text(s3, probe)
            reference = local.run(s3, replace(probe, sql=LIMIT_PROBE_REFERENCE)).text
        except QueryTimeout:
            raise
        except QueryError:
            return None  # no verdict on this object; the next item checks again
        records = reference.splitlines(keepends=True)
        if not same_rows(answer, "".join(records[:1]), "json"):
            return (
                f"S3 Select answered {LIMIT_PROBE!r} on s3://{request.bucket}/{request.key} "
                f"with {_count(answer)} records that are not the object's first record; "
                f"it does not honour LIMIT"
            )
        if len(records) > 1:
            with self._lock:
                self._honours_limit = True
        return None

    def _after_failure(self, s3: Any, request: QueryRequest, failure: QueryError) -> QueryResult:
        try:
            result = local.run(s3, request)
        except QueryUnsupported as unsupported:
            raise QueryError(
                f"{failure}; the local engine cannot run it either: {unsupported}"
            ) from None
        self._switch(f"S3 Select failed where the local engine succeeded: {failure}")
        return result

    def _verify(
        self, s3: Any, request: QueryRequest, selected: QueryResult, signature: tuple[Any, ...]
    ) -> QueryResult:
        try:
            checked = local.run(s3, request)
        except QueryTimeout:
            raise
        except QueryError:
            return selected  # nothing to compare with: S3 Select's answer stands
        if same_rows(selected.text, checked.text, request.rows_format):
            with self._lock:
                self._trusted.add(signature)
            return QueryResult.of_text(
                selected.text, selected.engine, checked.etag, selected.bytes_scanned
            )
        self._switch(
            f"S3 Select's answer to {brief(request.sql)!r} on s3://{request.bucket}/{request.key} "
            f"differs from the local engine's ({_count(selected.text)} vs "
            f"{_count(checked.text)} records)"
        )
        return checked

    def _is_trusted(self, signature: tuple[Any, ...]) -> bool:
        with self._lock:
            return signature in self._trusted

    def _switch(self, reason: str) -> None:
        with self._lock:
            if self._local_reason is not None:
                return
            self._local_reason = reason
        log("query-engine", engine=local.ENGINE, reason=reason, until="the process exits")


def _count(text: str) -> int:
    return text.count("\n")


def same_rows(left: str, right: str, rows_format: str) -> bool:
    """Whether two engines' outputs hold the same records (numbers compared as numbers)."""
    if rows_format == "csv":
        return list(csv.reader(io.StringIO(left))) == list(csv.reader(io.StringIO(right)))
    try:
        first = [json.loads(line) for line in left.splitlines() if line.strip()]
        second = [json.loads(line) for line in right.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return False
    return _same_value(first, second)


def _same_value(left: Any, right: Any) -> bool:
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_same_value(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same_value, left, right))
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    return type(left) is type(right) and left == right


AUTO = AutoEngine()
