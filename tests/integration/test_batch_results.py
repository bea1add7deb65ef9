"""A run's batch results, as the operator reads them: counted, listed, merged and reduced by item.

A batch result is one object of JSON lines (``worker.batches``). Until the worker stores them,
they are written here as the worker's contract says: its lines by ``result_line`` and
``failure_line``, the metadata an item's result carries (``worker.process``) plus ``items`` and
``failed-items``. Against the emulator over HTTP.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from batchspot import results as operator_results
from tests.integration.harness import Stack, make_stack, send_all
from worker.batches import failure_line, result_line
from worker.final import FinalError, FinalSettings, run_final
from worker.manifest import (
    Entry,
    Manifest,
    Run,
    build_manifest,
    count_run,
    read_entries,
    record_failure,
)

RUN = "run-batches"
BATCH_A = "results/.batches/" + "a" * 32 + ".jsonl"  # three items and one poison among them
BATCH_B = "results/.batches/" + "b" * 32 + ".jsonl"  # two items, all well
EARLIER = "results/.batches/" + "c" * 32 + ".jsonl"  # another run's
SINGLE = "results/in/single.csv.0123456789abcdef.json"  # a per-item message of this run
A_ITEMS = {"s3://in/a b.csv": {"n": 1}, "s3://in/ünï.csv": [1, "two\nlines"], "s3://in/x+y.csv": 3}
B_ITEMS = {"s3://in/b1.csv": {"n": 4}, "s3://in/b2.csv": None}
POISON = ("s3://in/poison.csv", "malformed CSV: unterminated quote in record 2")


class CountingS3:
    """The emulator's S3 client, counting the objects fetched (GET or download) by key."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3
        self.fetched: Counter[str] = Counter()

    def get_object(self, **request: Any) -> Any:
        self.fetched[request["Key"]] += 1
        return self._s3.get_object(**request)

    def download_file(self, bucket: str, key: str, path: str) -> None:
        self.fetched[key] += 1
        self._s3.download_file(bucket, key, path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def store_batch(
    s3: Any,
    bucket: str,
    key: str,
    job_id: str,
    items: dict[str, Any],
    poison: tuple = (),
    counted: bool = True,
) -> None:
    """Store a batch result as the worker does: one line an item, the failure last.

    ``counted`` False leaves out the item counts, as a result not written by our worker may.
    """
    lines = [
        b"".join(result_line(source, '"etag"', [json.dumps(result, indent=1).encode()]))
        for source, result in items.items()
    ]
    if poison:
        lines.append(failure_line(*poison))
    first = next(iter(items))
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"".join(lines),
        Metadata={
            "source": quote(f"{first} and {len(lines) - 1} more", safe=":/"),
            "source-etag": "",
            "job-id": job_id,
            "array-index": job_id.rpartition(":")[2],
            "attempt": "2",
            "job-attempt": "1",
            "handler": "rows-to-json",
            "duration-ms": "5",
            **(
                {"items": str(len(lines)), "failed-items": str(len(poison) // 2)} if counted else {}
            ),
        },
    )


@dataclass(frozen=True)
class BatchRun:
    stack: Stack
    run: Run


@pytest.fixture(scope="module")
def batch_run(s3: Any, sqs: Any) -> BatchRun:
    """A run that stored two batches and one item's result and dead-lettered one message."""
    stack = make_stack(sqs, s3)
    run = Run(RUN, stack.output_bucket, "results/", stack.queue_url)
    store_batch(s3, stack.output_bucket, BATCH_A, f"{RUN}:0", A_ITEMS, POISON)
    store_batch(s3, stack.output_bucket, BATCH_B, f"{RUN}:1", B_ITEMS)
    store_batch(s3, stack.output_bucket, EARLIER, "run-earlier:0", {"s3://in/old.csv": 0})
    s3.put_object(
        Bucket=stack.output_bucket,
        Key=SINGLE,
        Body=b'{"single": true}',
        Metadata={"job-id": f"{RUN}:0", "attempt": "1", "source": "s3://in/single.csv"},
    )
    record_failure(s3, run, "message-1", Entry("s3://in/dead.csv", None, None, 3, "NoSuchKey"))
    return BatchRun(stack, run)


def test_the_manifest_and_status_count_a_batchs_items_and_list_its_failed_one(
    batch_run: BatchRun, s3: Any, sqs: Any
) -> None:
    counting = CountingS3(s3)
    counts = count_run(counting, sqs, batch_run.run)  # what `invoke status` shows
    assert not counting.fetched.keys() & {BATCH_A, BATCH_B}, "counted from metadata, by HEAD"

    manifest = build_manifest(s3, sqs, batch_run.run)

    assert (manifest.counts.succeeded, manifest.counts.failed) == (6, 2)
    assert counts == manifest.counts
    succeeded = list(read_entries(s3, batch_run.stack.output_bucket, manifest.succeeded_key))
    assert sorted((e.source, e.output, e.size, e.attempts) for e in succeeded) == sorted(
        [(source, BATCH_A, None, 2) for source in A_ITEMS]
        + [(source, BATCH_B, None, 2) for source in B_ITEMS]
        + [("s3://in/single.csv", SINGLE, 16, 1)]
    )
    failures = list(operator_results.failures(s3, manifest))  # `invoke results --failed`
    assert sorted(operator_results.render_failure(e) for e in failures) == [
        "s3://in/dead.csv after 3 attempt(s): NoSuchKey",
        f"{POISON[0]} after 2 attempt(s): {POISON[1]}",
    ]
    assert {e.output for e in failures} == {None, BATCH_A}, "the batch that holds the reason"


def test_merge_and_download_read_each_batch_once_and_merge_one_line_per_item(
    batch_run: BatchRun, s3: Any, sqs: Any, tmp_path: Path
) -> None:
    manifest = build_manifest(s3, sqs, batch_run.run)
    counting = CountingS3(s3)

    merged = tmp_path / "merged.jsonl"
    count = operator_results.merge_into(counting, manifest, merged)
    lines = [json.loads(line) for line in merged.read_text(encoding="utf-8").splitlines()]

    assert count == len(lines) == 6
    expected = [
        {"source": source, "output": batch, "result": result}
        for batch, items in ((BATCH_A, A_ITEMS), (BATCH_B, B_ITEMS))
        for source, result in items.items()
    ] + [{"source": "s3://in/single.csv", "output": SINGLE, "result": {"single": True}}]
    assert sorted(lines, key=json.dumps) == sorted(expected, key=json.dumps)
    assert counting.fetched[BATCH_A] == counting.fetched[BATCH_B] == 1

    counting.fetched.clear()
    assert operator_results.download(counting, manifest, tmp_path / "out") == 3
    assert set(counting.fetched.values()) == {1}
    stored = s3.get_object(Bucket=batch_run.stack.output_bucket, Key=BATCH_A)["Body"].read()
    assert (tmp_path / "out" / BATCH_A).read_bytes() == stored


def test_the_final_step_reduces_batch_items_and_judges_the_share_of_failed_items(
    batch_run: BatchRun, s3: Any, sqs: Any
) -> None:
    count_lines = (
        f'{sys.executable} -c "import json, sys; '
        "print(json.dumps(sorted(json.loads(l)['source'] for l in sys.stdin)))\""
    )
    with pytest.raises(FinalError, match=r"25\.0% of the items failed"):  # 2 of 8 items
        run_final(s3, sqs, batch_run.run, FinalSettings(count_lines, tolerate_failures=20))
    reduced = s3.get_object(Bucket=batch_run.stack.output_bucket, Key=f"runs/{RUN}/final.json")
    assert json.loads(reduced["Body"].read()) == sorted([*A_ITEMS, *B_ITEMS, "s3://in/single.csv"])

    manifest, _ = run_final(s3, sqs, batch_run.run, FinalSettings(tolerate_failures=25))
    assert isinstance(manifest, Manifest) and manifest.counts.failed_share == 25.0


def test_the_final_step_says_pending_batch_messages_are_messages_and_what_they_hold(
    batch_run: BatchRun, s3: Any, sqs: Any
) -> None:
    """SQS counts messages (GetQueueAttributes' ApproximateNumberOfMessages*, Amazon SQS API
    Reference), and a batch message names up to 1,000 items: the final step says messages, and
    their items at the ratio ``invoke submit`` passes it, else the bound."""
    queue = make_stack(sqs, s3).queue_url  # this run's queue, still holding two batches
    run = replace(batch_run.run, queue_url=queue)
    batch = [{"bucket": "in", "key": f"late-{n}.csv"} for n in range(3)]
    send_all(sqs, queue, [json.dumps({"items": batch})] * 2)
    told = FinalSettings(items_per_message=3)

    with pytest.raises(FinalError) as unfinished:
        run_final(s3, sqs, run, told)
    assert str(unfinished.value).startswith(
        "the work queue still holds 2 message(s) waiting, in flight or delayed "
        "(about 6 items, 3 per message as seeded), so the run is not finished"
    )
    with pytest.raises(
        FinalError,
        match=r"2 message\(s\) waiting, in flight or delayed "
        r"\(each holds 1 to 1,000 items\)",
    ):
        run_final(s3, sqs, run, FinalSettings())
    manifest, _ = run_final(s3, sqs, run, replace(told, tolerate_pending=True))
    assert manifest.counts.render(told.items_per_message) == (
        "succeeded 6, failed 2, pending in the queue 2 message(s) "
        "(about 6 items, 3 per message as seeded), dead-lettered 0"
    )


def test_a_batch_without_item_counts_in_its_metadata_is_read_line_by_line(
    s3: Any, sqs: Any
) -> None:
    stack = make_stack(sqs, s3)
    run = Run("run-uncounted", stack.output_bucket, "results/", stack.queue_url)
    store_batch(s3, stack.output_bucket, BATCH_A, "run-uncounted:0", A_ITEMS, POISON, False)

    manifest = build_manifest(s3, sqs, run)

    assert (manifest.counts.succeeded, manifest.counts.failed) == (3, 1)
    assert count_run(s3, sqs, run) == manifest.counts
