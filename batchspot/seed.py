"""Seed the work queue: one message per S3 source object under a prefix.

Re-running a seed is safe. Each message names a source version (bucket, key, ETag) and the
worker stores its result under a key derived from exactly that (``worker.keys``), written
first-writer-wins; a duplicate message therefore costs one wasted read of the source, never a
second result. ``skip_done`` avoids even that by listing the results already stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from tqdm import tqdm

from worker.config import DEFAULT_OUTPUT_PREFIX
from worker.keys import derive_output_key
from worker.messages import CONTRACT_VERSION

SQS_BATCH = 10  # SendMessageBatch's hard limit
ENTRY_ATTEMPTS = 5  # tries for entries SQS rejects inside an otherwise successful batch
ENTRY_BACKOFF = 0.2  # seconds, doubled after each partial failure


@dataclass(frozen=True)
class Source:
    """One source object version, as listed."""

    bucket: str
    key: str
    etag: str


@dataclass(frozen=True)
class Failure:
    """A message SQS would not take, with its reason."""

    body: str
    code: str
    message: str


@dataclass
class SeedReport:
    """What a seed did; the task prints it."""

    listed: int = 0
    skipped_done: int = 0
    sent: int = 0
    failures: list[Failure] = field(default_factory=list)
    dry_run: bool = False
    samples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts for the operator."""
        verb = "would send" if self.dry_run else "sent"
        return (
            f"listed {self.listed}, skipped {self.skipped_done} already done, "
            f"{verb} {self.sent}, failed {len(self.failures)}"
        )


def list_sources(s3: Any, bucket: str, prefix: str = "", suffix: str = "") -> Iterator[Source]:
    """Yield the objects under ``prefix`` whose key ends in ``suffix``, page by page.

    Zero-byte keys ending in ``/`` are the console's folder markers, not data, and are skipped.
    """
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith(suffix) or (key.endswith("/") and item["Size"] == 0):
                continue
            yield Source(bucket, key, item["ETag"])


def stored_results(
    s3: Any, output_bucket: str, output_prefix: str, bucket: str, prefix: str
) -> set[str]:
    """Return the result keys already stored for sources under ``bucket``/``prefix``.

    One listing call per 1,000 results, instead of one HEAD per source.
    """
    listing_prefix = f"{output_prefix}{bucket}/{prefix}"
    paginator = s3.get_paginator("list_objects_v2")
    return {
        item["Key"]
        for page in paginator.paginate(Bucket=output_bucket, Prefix=listing_prefix)
        for item in page.get("Contents", [])
    }


def message_body(source: Source, query: str | None = None) -> str:
    """Return the message body for one source, in the worker's contract (version 1)."""
    body: dict[str, Any] = {
        "version": CONTRACT_VERSION,
        "bucket": source.bucket,
        "key": source.key,
        "etag": source.etag,
    }
    if query:
        body["query"] = query
    return json.dumps(body, ensure_ascii=False)


def send_batch(sqs: Any, queue_url: str, bodies: list[str]) -> tuple[int, list[Failure]]:
    """Send up to ten bodies; re-send only the entries SQS failed, then report the rest.

    botocore retries a failed *call*; a call that succeeds with some entries in ``Failed``
    is ours to handle. Entries failed by the sender's fault (too large, invalid) are final.
    """
    pending = {str(index): body for index, body in enumerate(bodies)}
    sent = 0
    failures: list[Failure] = []
    for attempt in range(ENTRY_ATTEMPTS):
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": entry_id, "MessageBody": body} for entry_id, body in pending.items()],
        )
        sent += len(response.get("Successful", []))
        retry: dict[str, str] = {}
        for failed in response.get("Failed", []):
            body = pending[failed["Id"]]
            if failed["SenderFault"] or attempt == ENTRY_ATTEMPTS - 1:
                failures.append(Failure(body, failed["Code"], failed.get("Message", "")))
            else:
                retry[failed["Id"]] = body
        if not retry:
            break
        pending = retry
        time.sleep(ENTRY_BACKOFF * 2**attempt)
    return sent, failures


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def send_messages(
    sqs: Any,
    queue_url: str,
    bodies: Iterable[str],
    concurrency: int,
    on_sent: Callable[[int], None],
) -> tuple[int, list[Failure]]:
    """Send ``bodies`` in batches of ten, at most ``concurrency`` batches in flight.

    The bodies are consumed lazily, so a listing of millions of keys is never held in memory.
    """
    sent = 0
    failures: list[Failure] = []

    def collect(done: Iterable[Future[tuple[int, list[Failure]]]]) -> None:
        nonlocal sent
        for future in done:
            batch_sent, batch_failures = future.result()
            sent += batch_sent
            failures.extend(batch_failures)
            on_sent(batch_sent + len(batch_failures))

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        in_flight: set[Future[tuple[int, list[Failure]]]] = set()
        for batch in _batches(bodies, SQS_BATCH):
            if len(in_flight) >= concurrency:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                collect(done)
            in_flight.add(pool.submit(send_batch, sqs, queue_url, batch))
        collect(wait(in_flight).done)
    return sent, failures


def seed(
    s3: Any,
    sqs: Any,
    *,
    queue_url: str,
    bucket: str,
    prefix: str = "",
    suffix: str = "",
    max_count: int | None = None,
    query: str | None = None,
    skip_done: bool = False,
    output_bucket: str | None = None,
    output_prefix: str = DEFAULT_OUTPUT_PREFIX,
    dry_run: bool = False,
    concurrency: int = 8,
) -> SeedReport:
    """List the sources, drop those already done if asked, and queue one message for each.

    ``max_count`` counts messages to send (after ``skip_done``), so repeating
    ``--skip-done --max-count N`` queues the next N sources each time.
    """
    if max_count is not None and max_count < 1:
        raise ValueError(f"max_count must be at least 1, got {max_count}")
    if skip_done and not output_bucket:
        raise ValueError("skip_done needs the output bucket to look for stored results")
    report = SeedReport(dry_run=dry_run)
    done = (
        stored_results(s3, output_bucket, output_prefix, bucket, prefix)
        if skip_done and output_bucket
        else set()
    )

    def bodies() -> Iterator[str]:
        wanted = 0
        for source in list_sources(s3, bucket, prefix, suffix):
            report.listed += 1
            if (
                done
                and derive_output_key(output_prefix, bucket, source.key, source.etag, query) in done
            ):
                report.skipped_done += 1
                continue
            yield message_body(source, query)
            wanted += 1
            if wanted == max_count:
                return

    if dry_run:
        for body in bodies():
            report.sent += 1
            if len(report.samples) < 3:
                report.samples.append(body)
        return report
    # tqdm draws only on a terminal (disable=None), so logs and tests stay clean.
    with tqdm(total=max_count, unit="msg", desc="seed", disable=None) as bar:
        report.sent, report.failures = send_messages(
            sqs, queue_url, bodies(), concurrency, bar.update
        )
    return report
