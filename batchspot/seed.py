"""Seed the work queue: one message per S3 source object under a prefix, or per batch of them.

Re-running a seed is safe. Each message names a source version (bucket, key, ETag) and the
worker stores its result under a key derived from exactly that and the run's recipe
(``worker.keys``), written first-writer-wins; a duplicate message therefore costs one wasted
read of the source, never a second result. ``skip_done`` avoids even that by listing the
results already stored, computing each key with the same recipe the workers will use.

SQS refuses a message over 1 MiB and a batch whose bodies total over 1 MiB (``worker.limits``);
an emulator takes both. So a body over the limit is reported as a failure and never sent, and
batches are cut by size as well as by count.

With ``batch_size`` each message names up to that many sources (``batchspot.batching``), formed
the same way on every seed of the same listing; ``skip_done`` then skips a batch whose result
key is already stored, listing the batches' results once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from batchspot.batching import Batching, SourceBatch, items_in
from batchspot.inventory import inventory_sources, read_manifest
from batchspot.sources import Source, list_sources_parallel, wanted
from worker.config import DEFAULT_OUTPUT_PREFIX
from worker.keys import (
    BATCH_RESULTS,
    DEFAULT_RECIPE,
    Recipe,
    derive_output_key,
    output_key_prefix,
)
from worker.limits import MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES, utf8_len
from worker.messages import CONTRACT_VERSION

ENTRY_ATTEMPTS = 5  # tries for entries SQS rejects inside an otherwise successful batch
ENTRY_BACKOFF = 0.2  # seconds, doubled after each partial failure


@dataclass(frozen=True)
class Failure:
    """A message SQS would not take, with its reason."""

    body: str
    code: str
    message: str


@dataclass
class SeedReport:
    """What a seed did; the task prints it.

    ``listed``, ``skipped_done``, ``items`` and ``failed_items`` count sources; ``sent`` and
    ``failures`` count messages. Without batches the two are the same.
    """

    listed: int = 0
    skipped_done: int = 0
    sent: int = 0
    failures: list[Failure] = field(default_factory=list)
    dry_run: bool = False
    samples: list[str] = field(default_factory=list)
    batched: bool = False
    items: int = 0
    failed_items: int = 0

    def summary(self) -> str:
        """One line of counts for the operator."""
        verb = "would send" if self.dry_run else "sent"
        if self.batched:
            return (
                f"listed {self.listed} items, skipped {self.skipped_done} already done, "
                f"{verb} {self.items} items in {self.sent} messages, failed {self.failed_items} "
                f"items in {len(self.failures)} messages"
            )
        return (
            f"listed {self.listed}, skipped {self.skipped_done} already done, "
            f"{verb} {self.sent}, failed {len(self.failures)}"
        )


def read_listing(path: Path, bucket: str, prefix: str = "", suffix: str = "") -> Iterator[Source]:
    """Yield the sources of a saved listing, filtered as S3's listings are (``sources.wanted``).

    The file is what ``aws s3api list-objects-v2 --bucket B --output json`` prints (its
    ``Contents``), so a listing made once, or elsewhere, seeds without any AWS call here.
    """
    try:
        contents = json.loads(path.read_text(encoding="utf-8")).get("Contents", [])
        items = [(item["Key"], item["ETag"], item.get("Size", 1)) for item in contents]
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as error:
        raise ValueError(
            f"{path} is not a listing as `aws s3api list-objects-v2 --output json` prints it "
            f"(a Contents list of Key and ETag): {error}"
        ) from None
    for key, etag, size in items:
        if wanted(key, size, prefix, suffix):
            yield Source(bucket, key, etag)


def stored_results(
    s3: Any, output_bucket: str, output_prefix: str, bucket: str, prefix: str
) -> set[str]:
    """Return the result keys already stored for sources under ``bucket``/``prefix``.

    One listing call per 1,000 results, instead of one HEAD per source. The listing prefix is
    the one every derived key shares, even a key shortened to fit S3's limit.
    """
    listing_prefix = output_key_prefix(output_prefix, bucket, prefix)
    paginator = s3.get_paginator("list_objects_v2")
    return {
        item["Key"]
        for page in paginator.paginate(Bucket=output_bucket, Prefix=listing_prefix)
        for item in page.get("Contents", [])
    }


def stored_batches(s3: Any, output_bucket: str, output_prefix: str) -> set[str]:
    """Return the keys of the batch results already stored (one listing call per 1,000)."""
    paginator = s3.get_paginator("list_objects_v2")
    return {
        item["Key"]
        for page in paginator.paginate(Bucket=output_bucket, Prefix=output_prefix + BATCH_RESULTS)
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


def oversized(body: str, limit: int = MAX_MESSAGE_BYTES) -> Failure | None:
    """Return the failure SQS would answer if ``body`` exceeds its 1 MiB limit, else None.

    Checked before sending: SQS would refuse such a message, and within a batch it would also
    push the batch over its total (``BatchRequestTooLong``), failing the other entries with it.
    A ``limit`` below SQS's is the operator's ``--batch-bytes``.
    """
    size = utf8_len(body)
    if size <= limit:
        return None
    allowed = (
        f"SQS accepts at most {MAX_MESSAGE_BYTES:,} (1 MiB)"
        if limit == MAX_MESSAGE_BYTES
        else f"--batch-bytes allows at most {limit:,}"
    )
    return Failure(body, "MessageTooLong", f"body is {size:,} bytes of UTF-8; {allowed}; not sent")


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


def _batches(bodies: Iterable[str]) -> Iterator[list[str]]:
    """Group bodies into SendMessageBatch calls within SQS's entry count and total size."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        body_size = utf8_len(body)
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + body_size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += body_size
    if batch:
        yield batch


def send_messages(
    sqs: Any,
    queue_url: str,
    bodies: Iterable[str],
    concurrency: int,
    on_sent: Callable[[int], None],
) -> tuple[int, list[Failure]]:
    """Send ``bodies`` in batches (ten, or fewer to stay within 1 MiB), ``concurrency`` in flight.

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
        for batch in _batches(bodies):
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
    recipe: Recipe = DEFAULT_RECIPE,
    output_bucket: str | None = None,
    output_prefix: str = DEFAULT_OUTPUT_PREFIX,
    dry_run: bool = False,
    concurrency: int = 8,
    listing: Path | None = None,
    inventory: str | None = None,
    list_concurrency: int = 8,
    batch_size: int | None = None,
    batch_bytes: int = MAX_MESSAGE_BYTES,
) -> SeedReport:
    """List the sources, drop those already done if asked, and queue one message for each.

    ``listing``: take the sources from a saved listing (:func:`read_listing`) instead of S3;
    ``s3`` is then used only for ``skip_done`` and may be None without it.
    ``inventory``: take them from the S3 Inventory whose ``manifest.json`` is at this
    ``s3://`` URL (:mod:`batchspot.inventory`); it must list ``bucket``.
    ``list_concurrency``: prefixes listed, or inventory files read, at once.

    ``recipe`` is the workers' (``Config.recipe``): ``skip_done`` counts a source as done only
    when its result was made by the same code, query and settings.
    ``max_count`` counts messages to send (after ``skip_done``), so repeating
    ``--skip-done --max-count N`` queues the next N sources each time. A body over SQS's limit
    is a failure in the report, not a message, so it does not count.

    ``batch_size``: one message names up to this many sources, in at most ``batch_bytes``
    (:mod:`batchspot.batching`); ``skip_done`` then skips a batch whose result is stored and
    ``max_count`` counts batch messages.
    """
    if max_count is not None and max_count < 1:
        raise ValueError(f"max_count must be at least 1, got {max_count}")
    if oversized(message_body(Source(bucket, "", ""), query)):
        # Every message would fail, and the report would hold a copy of the query for each.
        raise ValueError(
            f"the query alone makes every message longer than SQS's {MAX_MESSAGE_BYTES:,}-byte "
            "(1 MiB) limit; shorten the query"
        )
    batching = Batching(batch_size, batch_bytes, query) if batch_size else None
    if listing and inventory:
        raise ValueError("give the sources as a saved listing or as an inventory, not both")
    if list_concurrency < 1:
        raise ValueError(f"list_concurrency must be at least 1, got {list_concurrency}")
    if skip_done and not output_bucket:
        raise ValueError("skip_done needs the output bucket to look for stored results")
    if inventory:
        inventory_bucket, manifest = read_manifest(s3, inventory)
        if manifest.source_bucket != bucket:
            raise ValueError(
                f"the inventory at {inventory} lists bucket {manifest.source_bucket}, "
                f"not {bucket}, the bucket being seeded (the stack's input bucket, or --bucket)"
            )
    report = SeedReport(dry_run=dry_run, batched=batching is not None)
    done: set[str] = set()
    if skip_done and output_bucket:
        done = (
            stored_batches(s3, output_bucket, output_prefix)
            if batching
            else stored_results(s3, output_bucket, output_prefix, bucket, prefix)
        )

    message_recipe = recipe.for_message(query, None)
    group = batching.group if batching else None

    def units() -> Iterator[Source | SourceBatch]:
        """Yield the sources, or their batch messages, as listing, inventory or file give them."""
        if listing:
            sources = read_listing(listing, bucket, prefix, suffix)
            return group(sources) if group else sources
        if inventory:
            return inventory_sources(
                s3, inventory_bucket, manifest, prefix, suffix, list_concurrency, group
            )
        return list_sources_parallel(s3, bucket, prefix, suffix, list_concurrency, group)

    def is_done(unit: Source | SourceBatch) -> bool:
        if isinstance(unit, SourceBatch):
            return unit.result_key(output_prefix, message_recipe) in done
        key = derive_output_key(output_prefix, bucket, unit.key, unit.etag, message_recipe)
        return key in done

    def bodies() -> Iterator[str]:
        queued = 0
        for unit in units():
            count = len(unit) if isinstance(unit, SourceBatch) else 1
            report.listed += count
            if done and is_done(unit):
                report.skipped_done += count
                continue
            if isinstance(unit, SourceBatch):
                failure = oversized(unit.body, batch_bytes)
                body = unit.body
            else:
                body = message_body(unit, query)
                failure = oversized(body)
            if failure:
                report.failures.append(failure)
                report.failed_items += count
                continue
            yield body
            report.items += count
            queued += 1
            if queued == max_count:
                return

    if dry_run:
        for body in bodies():
            report.sent += 1
            if len(report.samples) < 3:
                report.samples.append(body)
        return report
    # tqdm draws only on a terminal (disable=None), so logs and tests stay clean.
    with tqdm(total=max_count, unit="msg", desc="seed", disable=None) as bar:
        report.sent, failures = send_messages(sqs, queue_url, bodies(), concurrency, bar.update)
    report.failures.extend(failures)
    refused_items = sum(items_in(failure.body) for failure in failures)
    report.items -= refused_items
    report.failed_items += refused_items
    return report
