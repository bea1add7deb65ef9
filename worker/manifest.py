"""A run's manifest: which items succeeded, which failed and why, and where the results are.

Laid out like Step Functions' Distributed Map ResultWriter: ``runs/<job-id>/manifest.json``
names a SUCCEEDED and a FAILED JSON-lines file beside it, one line per item (source, output
key, size, attempts, reason), plus the counts.

The worker spends nothing on successes: a result already carries the job id and attempt in
its metadata (``worker.process``), so the manifest's builder lists the results written since
the run began and reads the metadata of those only. A failure leaves no result, so the worker
records it when the item fails for the last time, before its message goes to the dead-letter
queue: one small PUT per failed item (:func:`record_failure`), under OUTPUT_PREFIX where the
worker may write (``<OUTPUT_PREFIX>.runs/<job-id>/``). The builder runs in the final
job (``worker.final``) and in ``invoke results``; the worker image cannot import ``batchspot``,
so the logic lives here.

A batch result (``worker.batches``: one object, one JSON line per item) counts as its items,
not as one: each item that succeeded is a SUCCEEDED line whose ``output`` is the batch's key
(and ``size`` None: its result is one line of that object), each that failed for good a FAILED
line with its reason. The lines are read from the object as a stream; counting alone
(:func:`count_run`) reads the item counts from its metadata, by HEAD.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote

from worker.batches import (
    FAILED_ITEMS_METADATA,
    ITEMS_METADATA,
    BatchLine,
    one_line,
    read_lines,
)
from worker.keys import BATCH_RESULTS, RUN_RECORDS
from worker.queue_depth import held_items, queue_counts

RUNS_PREFIX = "runs/"
# Results written up to this long before the run began still count, for clocks that differ.
CLOCK_SKEW = timedelta(minutes=5)
HEAD_CONCURRENCY = 8
# Results requested ahead of the one being merged; below botocore's 10 pooled connections.
OPEN_AHEAD = 8
_CHUNK_BYTES = 64 * 1024
In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Entry:
    """One item of a run, as a line of the SUCCEEDED or FAILED file.

    An item of a batch has the batch's result key as ``output`` and no ``size``.
    """

    source: str | None
    output: str | None
    size: int | None
    attempts: int | None
    reason: str | None = None

    def line(self) -> str:
        """Return the entry as one JSON line."""
        return json.dumps(asdict(self), ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Run:
    """One run (an array job): its id, when it began, where its results and messages are.

    ``since`` None reads every result under the prefix (a run Batch does not know, as a local
    one); results written before the run began are not its own.
    """

    run_id: str
    bucket: str
    output_prefix: str
    queue_url: str
    since: datetime | None = None

    @property
    def prefix(self) -> str:
        """Return the key prefix of the run's manifest files: ``runs/<job-id>/``."""
        return f"{RUNS_PREFIX}{self.run_id}/"

    @property
    def failures_prefix(self) -> str:
        """Return where the workers record the run's failures, under OUTPUT_PREFIX.

        There the worker's role may already write (it may write nothing else), and no result
        key can lie there (``worker.keys.RUN_RECORDS``).
        """
        return f"{self.output_prefix}{RUN_RECORDS}{self.run_id}/"


@dataclass(frozen=True)
class Counts:
    """Where a run's items stand; ``pending`` and ``dead_lettered`` are SQS's estimates.

    Those two count messages, as SQS does: with batch messages, not items.
    """

    succeeded: int
    failed: int
    pending: int | None
    dead_lettered: int | None

    @property
    def failed_share(self) -> float:
        """Percentage of the settled items that failed (0 when none settled)."""
        settled = self.succeeded + self.failed
        return 100.0 * self.failed / settled if settled else 0.0

    def render(self, items_per_message: float | None = None) -> str:
        """Return the counts as one line for the operator.

        The queues' messages are told apart from items where they may differ: what they hold
        is said at ``items_per_message`` (the seeds' ratio; None where it is not known).
        """
        return (
            f"succeeded {self.succeeded}, failed {self.failed}, "
            f"pending in the queue {_messages(self.pending, items_per_message)}, "
            f"dead-lettered {_messages(self.dead_lettered, items_per_message)}"
        )


def _messages(count: int | None, items_per_message: float | None) -> str:
    """Return a count of messages: bare where it is also the items' (none, or one item each)."""
    if count is None:
        return "unknown"
    if count == 0 or items_per_message == 1:
        return str(count)
    return f"{count} message(s){held_items(count, items_per_message)}"


@dataclass(frozen=True)
class Manifest:
    """A manifest as written: its run, its key, its files' keys and the counts."""

    run: Run
    key: str
    succeeded_key: str
    failed_key: str
    counts: Counts

    @property
    def bucket(self) -> str:
        """The output bucket, which holds the results and the manifest."""
        return self.run.bucket

    @property
    def uri(self) -> str:
        """Where the manifest is, as an ``s3://`` URI."""
        return f"s3://{self.bucket}/{self.key}"

    def document(self) -> dict[str, Any]:
        """Return ``manifest.json``'s content, laid out like a Distributed Map's manifest."""
        return {
            "DestinationBucket": self.bucket,
            "JobId": self.run.run_id,
            "ResultsPrefix": self.run.output_prefix,
            "Counts": asdict(self.counts),
            "ResultFiles": {
                "SUCCEEDED": [{"Key": self.succeeded_key, "Count": self.counts.succeeded}],
                "FAILED": [{"Key": self.failed_key, "Count": self.counts.failed}],
                "PENDING": [],
            },
        }


def is_run_record(key: str, output_prefix: str) -> bool:
    """Whether ``key`` is a run's record (manifest files, a failure record), not a result."""
    return key.startswith((RUNS_PREFIX, output_prefix + RUN_RECORDS))


def is_batch_result(key: str, output_prefix: str) -> bool:
    """Whether ``key`` is a batch's result (JSON lines, one per item), not one item's."""
    return key.startswith(output_prefix + BATCH_RESULTS)


def record_failure(s3: Any, run: Run, message_id: str, *entries: Entry) -> None:
    """Store a message's last failure, one line per item it names (a batch names many).

    One PUT, keyed by its message so a repeat overwrites.
    """
    name = hashlib.sha256(message_id.encode()).hexdigest()[:16]
    s3.put_object(
        Bucket=run.bucket,
        Key=f"{run.failures_prefix}{name}.json",
        Body="".join(entry.line() for entry in entries).encode(),
        ContentType="application/json",
    )


def _listed(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _stored_by(s3: Any, run: Run, prefix: str) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """Yield (listing entry, metadata) of each result under ``prefix`` this run stored, in order.

    Only results written since the run began (less the clock skew) are read, by HEAD, a
    bounded number at a time; the job id in their metadata says whose they are.
    """
    after = run.since - CLOCK_SKEW if run.since else None
    candidates = (
        item
        for item in _listed(s3, run.bucket, prefix)
        if (after is None or item["LastModified"] >= after)
        and not is_run_record(item["Key"], run.output_prefix)
    )

    def read(item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]] | None:
        metadata = s3.head_object(Bucket=run.bucket, Key=item["Key"]).get("Metadata", {})
        if metadata.get("job-id", "").split(":", 1)[0] != run.run_id:
            return None
        return item, metadata

    with ThreadPoolExecutor(HEAD_CONCURRENCY) as pool:
        for stored in _bounded_map(pool, read, candidates, HEAD_CONCURRENCY):
            if stored is not None:
                yield stored


def _number(metadata: dict[str, str], name: str) -> int | None:
    value = metadata.get(name, "")
    return int(value) if value.isdecimal() else None


def _all_failed(metadata: dict[str, str]) -> bool:
    """Whether a batch's metadata says every item failed (so it holds no result to list)."""
    items = _number(metadata, ITEMS_METADATA)
    return items is not None and _number(metadata, FAILED_ITEMS_METADATA) == items


def _batch_lines(s3: Any, bucket: str, key: str) -> Iterator[BatchLine]:
    """Stream a batch result's lines, one item at a time."""
    return read_lines(s3.get_object(Bucket=bucket, Key=key)["Body"].iter_lines())


def succeeded(s3: Any, run: Run) -> Iterator[Entry]:
    """Yield the items this run stored, in key order; a batch's succeeded items together."""
    for item, metadata in _stored_by(s3, run, run.output_prefix):
        attempts = _number(metadata, "attempt")
        if not is_batch_result(item["Key"], run.output_prefix):
            yield Entry(
                source=unquote(metadata["source"]) if "source" in metadata else None,
                output=item["Key"],
                size=item["Size"],
                attempts=attempts,
            )
        elif not _all_failed(metadata):
            for line in _batch_lines(s3, run.bucket, item["Key"]):
                if not line.failed:
                    yield Entry(line.source, item["Key"], None, attempts)


def _bounded_map(
    pool: ThreadPoolExecutor, function: Callable[[In], Out], items: Iterable[In], window: int
) -> Iterator[Out]:
    """Like ``pool.map``, in order, but with at most ``window`` items in flight or waiting.

    ``pool.map`` would take every item at once: a listing of millions of results in memory.
    """
    futures: deque[Future[Out]] = deque()
    for item in items:
        futures.append(pool.submit(function, item))
        if len(futures) >= window:
            yield futures.popleft().result()
    for future in futures:
        yield future.result()


def failed(s3: Any, run: Run) -> Iterator[Entry]:
    """Yield the failures the workers recorded for this run, then its batches' failed items.

    A batch whose metadata says none of its items failed is not read.
    """
    for item in _listed(s3, run.bucket, run.failures_prefix):
        yield from read_entries(s3, run.bucket, item["Key"])
    for item, metadata in _stored_by(s3, run, run.output_prefix + BATCH_RESULTS):
        if _number(metadata, FAILED_ITEMS_METADATA) == 0:
            continue
        attempts = _number(metadata, "attempt")
        for line in _batch_lines(s3, run.bucket, item["Key"]):
            if line.failed:
                yield Entry(line.source, item["Key"], None, attempts, line.error)


def queue_backlog(sqs: Any, queue_url: str) -> tuple[int, int | None]:
    """Return (messages pending in the work queue, messages in its dead-letter queue).

    The dead-letter queue is the one the work queue's redrive policy names (None if none).
    """
    pending = queue_counts(sqs, queue_url).total
    redrive = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])[
        "Attributes"
    ].get("RedrivePolicy")
    if not redrive:
        return pending, None
    *_, account, name = json.loads(redrive)["deadLetterTargetArn"].split(":")
    dlq_url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return pending, queue_counts(sqs, dlq_url).total


def _upload_lines(s3: Any, bucket: str, key: str, entries: Iterable[Entry]) -> int:
    """Write ``entries`` as JSON lines through a temporary file (bounded memory); count them."""
    count = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lines.json"
        with path.open("w", encoding="utf-8") as sink:
            for entry in entries:
                sink.write(entry.line())
                count += 1
        s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": "application/x-ndjson"})
    return count


def build_manifest(s3: Any, sqs: Any, run: Run) -> Manifest:
    """Write the run's SUCCEEDED and FAILED files and its manifest; return what was written."""
    succeeded_key, failed_key = f"{run.prefix}SUCCEEDED_0.json", f"{run.prefix}FAILED_0.json"
    succeeded_count = _upload_lines(s3, run.bucket, succeeded_key, succeeded(s3, run))
    failed_count = _upload_lines(s3, run.bucket, failed_key, failed(s3, run))
    pending, dead_lettered = queue_backlog(sqs, run.queue_url)
    manifest = Manifest(
        run=run,
        key=f"{run.prefix}manifest.json",
        succeeded_key=succeeded_key,
        failed_key=failed_key,
        counts=Counts(succeeded_count, failed_count, pending, dead_lettered),
    )
    s3.put_object(
        Bucket=run.bucket,
        Key=manifest.key,
        Body=json.dumps(manifest.document(), indent=2).encode(),
        ContentType="application/json",
    )
    return manifest


def count_run(s3: Any, sqs: Any, run: Run) -> Counts:
    """Count the run's items as :func:`build_manifest` would, without writing anything.

    A batch counts as the items its metadata names (read by HEAD, not GET); a batch without
    those counts (written by another tool) is read line by line.
    """
    failures = sum(1 for _ in _listed(s3, run.bucket, run.failures_prefix))
    ok = 0
    for item, metadata in _stored_by(s3, run, run.output_prefix):
        if not is_batch_result(item["Key"], run.output_prefix):
            ok += 1
            continue
        items = _number(metadata, ITEMS_METADATA)
        failed_items = _number(metadata, FAILED_ITEMS_METADATA)
        if items is None or failed_items is None:
            items = failed_items = 0
            for line in _batch_lines(s3, run.bucket, item["Key"]):
                items += 1
                failed_items += line.failed
        ok += items - failed_items
        failures += failed_items
    pending, dead_lettered = queue_backlog(sqs, run.queue_url)
    return Counts(ok, failures, pending, dead_lettered)


def read_entries(s3: Any, bucket: str, key: str) -> Iterator[Entry]:
    """Stream the entries of a SUCCEEDED or FAILED file, line by line."""
    for line in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_lines():
        if line.strip():
            record = json.loads(line)
            yield Entry(**{name: record.get(name) for name in Entry.__dataclass_fields__})


def each_object_once(entries: Iterable[Entry]) -> Iterator[Entry]:
    """Drop the entries repeating the previous one's output: a batch's items, listed together."""
    previous = None
    for entry in entries:
        if entry.output is not None and entry.output != previous:
            yield entry
        previous = entry.output


def merge(
    s3: Any,
    bucket: str,
    entries: Iterable[Entry],
    sink: IO[bytes],
    output_prefix: str,
) -> int:
    """Write one JSON line per result, ``{"source", "output", "result"}``; return the count.

    Each result is copied through in chunks, never held whole, and kept on one line
    (:func:`worker.batches.one_line`). A batch result (under ``output_prefix``) is read once
    and gives one line per item that succeeded, its ``output`` the batch's key; its items
    are small by design, so each is parsed and written again, one at a time.
    """
    count = 0

    def opened(entry: Entry) -> tuple[Entry, Any]:
        return entry, s3.get_object(Bucket=bucket, Key=entry.output)["Body"]

    # The next few results are requested while one is copied; each holds a connection, not data.
    with ThreadPoolExecutor(OPEN_AHEAD) as pool:
        for entry, body in _bounded_map(pool, opened, each_object_once(entries), OPEN_AHEAD):
            if is_batch_result(entry.output or "", output_prefix):
                for line in read_lines(body.iter_lines()):
                    if not line.failed:
                        document = {"source": line.source, "output": entry.output}
                        sink.write(
                            json.dumps(
                                {**document, "result": line.result}, ensure_ascii=False
                            ).encode()
                            + b"\n"
                        )
                        count += 1
                continue
            head = {"source": entry.source, "output": entry.output}
            sink.write(json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "result": ')
            for chunk in body.iter_chunks(_CHUNK_BYTES):
                sink.write(one_line(chunk))
            sink.write(b"}\n")
            count += 1
    return count
