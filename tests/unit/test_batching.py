"""Batch messages from the seeder: the worker's contract, SQS's size limit, the same batches twice.

SQS takes a message of at most 1 MiB ("Amazon SQS message quotas",
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html);
the emulators take more, so the limit is tested here, on bytes of UTF-8.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from batchspot.batching import Batching
from batchspot.inventory import inventory_sources, read_manifest
from batchspot.seed import Source, seed
from batchspot.sources import list_sources, list_sources_parallel
from batchspot_support.inventory_files import write_inventory
from tests.unit.in_memory_s3 import in_memory_bucket
from worker.keys import Recipe, derive_batch_key
from worker.messages import WorkBatch, parse_message

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/work"
ODD_KEYS = ["in/a b.csv", "in/ünï cödé.csv", "in/x+y=z&.csv", "in/日本.json", "in/plain.csv"]


def sources(keys: list[str]) -> list[Source]:
    return [Source("src", key, f'"etag-{n}"') for n, key in enumerate(keys)]


def test_batch_bodies_are_the_workers_contract_for_any_key():
    batches = list(Batching(2, query="SELECT * FROM S3Object s LIMIT 3").group(sources(ODD_KEYS)))

    parsed = [parse_message(batch.body) for batch in batches]
    assert all(isinstance(batch, WorkBatch) for batch in parsed)
    assert [len(batch.items) for batch in parsed] == [2, 2, 1]
    assert [(i.bucket, i.key, i.etag) for b in parsed for i in b.items] == [
        ("src", key, f'"etag-{n}"') for n, key in enumerate(ODD_KEYS)
    ]
    assert {b.query for b in parsed} == {"SELECT * FROM S3Object s LIMIT 3"}
    assert batches[0].body.count("LIMIT 3") == 1, "the query once per message, not per item"
    assert "ünï" in batches[0].body, "UTF-8 as is: a character costs its bytes, not \\u escapes"


def test_a_message_is_cut_at_batch_bytes_exactly():
    listed = sources([f"in/{n}.csv" for n in range(3)])
    whole = next(Batching(3).group(listed)).body
    size = len(whole.encode())

    assert [len(b) for b in Batching(3, max_bytes=size).group(listed)] == [3], "exactly fits"
    cut = list(Batching(3, max_bytes=size - 1).group(listed))
    assert [len(b) for b in cut] == [2, 1], "one byte less does not"
    assert all(len(b.body.encode()) <= size - 1 for b in cut)


def test_a_key_too_long_for_any_batch_fails_alone_and_the_others_are_sent(tmp_path: Path):
    """Nothing is lost: every listed source is in a message sent or in a reported failure."""
    long_key = "in/" + "é" * 200 + ".csv"
    keys = ["in/1.csv", "in/2.csv", long_key, "in/3.csv"]
    listing = tmp_path / "listing.json"
    listing.write_text(json.dumps({"Contents": [{"Key": k, "ETag": '"e"'} for k in keys]}))

    report = seed(
        None, None, queue_url=QUEUE, bucket="src", listing=listing, dry_run=True,
        batch_size=10, batch_bytes=300,
    )  # fmt: skip

    assert (report.listed, report.items, report.failed_items, report.sent) == (4, 3, 1, 2)
    (failure,) = report.failures
    assert failure.code == "MessageTooLong"
    assert "--batch-bytes allows at most 300" in failure.message
    assert [i.key for i in parse_message(failure.body).items] == [long_key]
    sent = [i.key for body in report.samples for i in parse_message(body).items]
    assert sent == ["in/1.csv", "in/2.csv", "in/3.csv"]
    assert report.summary() == (
        "listed 4 items, skipped 0 already done, would send 3 items in 2 messages, "
        "failed 1 items in 1 messages"
    )


@pytest.mark.parametrize(
    ("size", "max_bytes", "reason"),
    [(0, 1000, "--batch-size must be 1 to 1000"), (1001, 1000, "--batch-size must be 1 to 1000"),
     (10, 1_048_577, "--batch-bytes must be 1 to 1,048,576"),
     (10, 60, "shorten the query or raise --batch-bytes")],
)  # fmt: skip
def test_limits_the_worker_or_sqs_would_refuse_are_refused_before_listing(size, max_bytes, reason):
    with pytest.raises(ValueError, match=reason):
        Batching(size, max_bytes, query="SELECT * FROM S3Object s WHERE s.a = 'x'")


LAYOUT = [f"p{p}/k{k:02d}.csv" for p in range(4) for k in range(7)]


def test_parallel_listing_forms_each_paginators_batches_whatever_the_interleaving():
    """Batches are formed per paginator, in its order: the same listing, the same batches."""
    batching = Batching(3)
    with in_memory_bucket("src", dict.fromkeys(LAYOUT, b"x")) as s3:
        expected = {
            tuple(s.key for s in batch.sources)
            for subtree in ("p0/", "p1/", "p2/", "p3/")
            for batch in batching.group(list_sources(s3, "src", subtree))
        }
        for _ in range(2):
            got = list_sources_parallel(s3, "src", "", "", 4, batching.group)
            assert {tuple(s.key for s in batch.sources) for batch in got} == expected


def test_inventory_files_are_batched_each_on_its_own():
    rows = [{"key": f"in/{n} +.csv", "size": 4, "e_tag": f"e{n}"} for n in range(6)]
    with in_memory_bucket("inv") as s3:
        manifest = write_inventory(s3, "inv", "inv", rows, "CSV", rows_per_file=3)
        report = seed(
            s3, None, queue_url=QUEUE, bucket="inv", inventory=manifest, dry_run=True,
            batch_size=2,
        )  # fmt: skip
        inventory_bucket, parsed = read_manifest(s3, manifest)
        grouped = inventory_sources(s3, inventory_bucket, parsed, group=Batching(2).group)
        batches = sorted([s.key for s in batch.sources] for batch in grouped)
    # Two files of 3 rows: 2 + 1 each, never a batch across the two files, in either order.
    assert batches == [[f"in/{n} +.csv" for n in group] for group in ([0, 1], [2], [3, 4], [5])]
    assert (report.listed, report.items, report.sent) == (6, 6, 4)


def test_skip_done_skips_a_batch_whose_result_is_stored_by_the_workers_recipe():
    keys = [f"in/{n} ü+.csv" for n in range(5)]
    workers = Recipe(query="SELECT * FROM S3Object s LIMIT 5", code="img@sha256:1\nrows-to-json")
    with in_memory_bucket("src", dict.fromkeys(keys, b"id\n1\n")) as s3:
        s3.create_bucket(Bucket="dst")
        first = seed(s3, None, queue_url=QUEUE, bucket="src", dry_run=True, batch_size=2)
        # What a worker stores for the first message: the batch key of what it read.
        stored = parse_message(first.samples[0])
        s3.put_object(
            Bucket="dst",
            Key=derive_batch_key("results/", stored.items, workers.for_message(None, None)),
            Body=b"",
        )

        def again(recipe: Recipe):
            return seed(
                s3, None, queue_url=QUEUE, bucket="src", skip_done=True, recipe=recipe,
                output_bucket="dst", dry_run=True, batch_size=2,
            )  # fmt: skip

        report = again(workers)
        assert (report.listed, report.skipped_done, report.items, report.sent) == (5, 2, 3, 2)
        assert [parse_message(body).items[0].key for body in report.samples] == keys[2:5:2]
        assert again(replace(workers, code="img@sha256:2\nrows-to-json")).skipped_done == 0
