"""The local engine: S3 Select's results without S3 Select, by streaming the object.

sqlglot parses the SQL (:mod:`.sql`), ranged GETs stream and decode the object
(:mod:`.reader`), the plan runs record by record (:mod:`.evaluator`) and the output is written
as S3 Select writes it (:mod:`.serialise`), streamed to the caller a chunk at a time. Memory
stays bounded by one fetched range, one record and one output chunk, and time linear in the
bytes read, whatever the input (:mod:`.caps`); ``LIMIT`` stops the fetching and the item's
deadline stops the query.

Queries the vectorised fast path can run exactly (:mod:`.fastplan`) run there instead
(:mod:`.fast`, pyarrow over the same ranged GETs); the choice is made per query and logged
once. Should the data turn out to be beyond the fast path part way (a value that does not
CAST, a ragged row), the Python evaluator reruns the query on the same version of the object
and the text already passed on is skipped, so the caller sees one result either way.

A process makes one fast-path batch at a time: the slot is taken to produce a chunk and given
back before the chunk goes to the consumer (a command reading its stdin, rows-to-json
uploading), so a slow consumer holds up no other item. What bounds the memory is then the one
batch being made (the slot: Arrow's arrays and the kernels' temporaries) and the number of
scans open at once (MAX_OPEN_FAST_SCANS; a query that finds them all open runs on the Python
evaluator rather than wait), each of which keeps between its batches Arrow's readahead (up to
32 blocks of 512 KiB, see :mod:`.fast`), a fetched range and the one chunk its consumer holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from worker.logs import brief, log
from worker.long_lived import freeze_new_imports
from worker.query import Deadline, QueryRequest, QueryResult, QueryTimeout
from worker.query.local.evaluator import evaluate
from worker.query.local.fastplan import Declined, refusal
from worker.query.local.reader import RangedObject, check_format, open_records
from worker.query.local.serialise import serialise
from worker.query.local.sql import Plan, compile_query

ENGINE = "local"
# False: every query on the Python evaluator (the tests run both paths through this switch).
FAST_PATH = True
# One fast-path batch at a time per process: a batch being computed keeps a core busy, and
# processes (one per vCPU) give the parallelism. Four scans computing at once
# (WORKER_CONCURRENCY's default) peaked at ~330 MiB, past the 256 MiB budget.
_BATCH_SLOT = threading.Semaphore(1)
# Fast-path scans open at once per process; a query that finds them all open runs on the Python
# evaluator (same bytes, its own small bounded memory) rather than wait for one to end. An open
# scan keeps ~50 MiB between its batches (Arrow's readahead, a range of up to 8 MiB, a chunk).
# Four items whose consumers take turns chunk by chunk peaked at 185 MiB with one open scan, 203
# with two, 297 with four (python bench/fast_path_open_scans.py --open-scans N).
MAX_OPEN_FAST_SCANS = 2
_OPEN_FAST_SCANS = threading.Semaphore(MAX_OPEN_FAST_SCANS)
_logged: set[tuple[object, ...]] = set()
_logged_lock = threading.Lock()


def run(s3: Any, request: QueryRequest) -> QueryResult:
    """Start ``request`` here; raise QueryUnsupported before any read if the SQL is beyond us.

    The first range is fetched before this returns, so a missing object fails here and the
    result's ETag is the version the rows come from (later ranges carry If-Match on it). The
    rows are produced as the result is read; that iteration raises QueryTimeout once
    ``request.deadline`` passes, and a QueryError naming the cap for any input past the caps
    of :mod:`.caps`.
    """
    plan = compile_query(request.sql)
    sources = [RangedObject(s3, request.bucket, request.key)]
    chunks = _chunks(s3, plan, sources, request)
    next(chunks)  # opened: the format is checked and the first range read
    return QueryResult(
        chunks,
        ENGINE,
        etag=sources[0].etag,
        scanned=lambda: sum(source.bytes_fetched for source in sources),
    )


def _chunks(
    s3: Any, plan: Plan, sources: list[RangedObject], request: QueryRequest
) -> Iterator[str]:
    """Yield "" once the object is open, then the serialised rows as they are produced.

    A fast-path run that declines part way is rerun by the Python evaluator from a second
    source pinned to the first one's ETag (appended to ``sources``, so its bytes count).
    """
    check_format(request.input)
    deadline = Deadline(request.deadline)
    source = sources[0]
    if request.input.kind == "PARQUET":
        yield from _parquet(plan, source, request)
        return
    why_not = _fast_path_refusal(plan, request)
    if why_not is None and not _OPEN_FAST_SCANS.acquire(blocking=False):
        why_not = f"{MAX_OPEN_FAST_SCANS} fast-path scans are open in this process"
    _log_path(request, why_not)
    if why_not is not None:
        yield from _evaluated(plan, source, request, deadline)
        return
    passed_on = 0
    try:
        # pyarrow: ~80 MiB, loaded only by a query using it, then kept out of full collections
        from worker.query.local import fast, fast_json

        freeze_new_imports()
        scan = fast_json.chunks if request.input.kind == "JSON" else fast.chunks
        source.fetch_first()
        yield ""
        produced = scan(source, request.input, plan, request.rows_format, deadline)
        for chunk in _made_in_the_slot(produced, request.deadline):
            passed_on += len(chunk)
            yield chunk
        return
    except Declined as declined:
        _log_path(request, f"declined on the data: {declined}")
    finally:
        _OPEN_FAST_SCANS.release()
    rerun = RangedObject(s3, request.bucket, request.key, etag=source.etag)
    sources.append(rerun)
    rest = _evaluated(plan, rerun, request, Deadline(request.deadline))
    next(rest)
    yield from _skipped(rest, passed_on)


def _made_in_the_slot(chunks: Iterator[str], deadline_at: float | None) -> Iterator[str]:
    """Yield ``chunks``, holding the process's fast-path slot while each is made, not after.

    The wait is then for other items' batches, never for their consumers; QueryTimeout if the
    item's deadline passes waiting.
    """
    while True:
        wait = None if deadline_at is None else max(0.0, deadline_at - time.monotonic())
        if not _BATCH_SLOT.acquire(timeout=wait):
            raise QueryTimeout("the item's deadline passed while waiting for the fast path")
        try:
            chunk = next(chunks, None)
        finally:
            _BATCH_SLOT.release()
        if chunk is None:
            return
        yield chunk


def _parquet(plan: Plan, source: RangedObject, request: QueryRequest) -> Iterator[str]:
    """Parquet: only the columns and row groups needed, always vectorised (:mod:`.parquet`).

    An open Parquet scan holds a row group's columns, so it counts among the process's open
    fast-path scans; Parquet has no other path, so a scan waits for one (until the item's
    deadline) rather than declining. Each batch is made in the slot, as on the fast path.
    """
    from worker.query.local import parquet  # pyarrow, as for the fast path

    freeze_new_imports()
    _log_path(request, None)
    wait = None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
    if not _OPEN_FAST_SCANS.acquire(timeout=wait):
        raise QueryTimeout("the item's deadline passed while waiting for an open Parquet scan")
    try:
        produced = parquet.chunks(source, plan, request, vectorised=FAST_PATH)
        yield from _made_in_the_slot(produced, request.deadline)
    finally:
        _OPEN_FAST_SCANS.release()


def _evaluated(
    plan: Plan, source: RangedObject, request: QueryRequest, deadline: Deadline
) -> Iterator[str]:
    """Yield the Python evaluator's rows: "" once the object is open, then the serialised rows."""
    with open_records(source, request.input, deadline) as records:
        source.fetch_first()
        yield ""
        yield from serialise(evaluate(plan, records, deadline), request.rows_format)


def _skipped(chunks: Iterator[str], count: int) -> Iterator[str]:
    """``chunks`` without their first ``count`` characters."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def _fast_path_refusal(plan: Plan, request: QueryRequest) -> str | None:
    """Why this query runs on the Python evaluator; None: the fast path runs it."""
    return refusal(plan, request.input) if FAST_PATH else "the fast path is switched off"


def _log_path(request: QueryRequest, why_not: str | None) -> None:
    """Log which path runs a query, once per query and reason for the life of the process."""
    path = "python" if why_not else "fast"
    key = (request.sql, request.input, request.rows_format, path, why_not)
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    log("query-path", path=path, reason=why_not or "vectorised", sql=brief(request.sql))
