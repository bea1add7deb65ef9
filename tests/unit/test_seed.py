import json
from dataclasses import replace

import boto3
import pytest
from botocore.stub import Stubber

from batchspot import seed as seed_module
from batchspot.seed import Source, message_body, seed, send_batch, send_messages
from tests.unit.in_memory_s3 import in_memory_bucket
from worker.keys import Recipe, derive_output_key
from worker.limits import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/work"


@pytest.fixture
def sqs():
    return boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def entries(bodies: dict[str, str]) -> list[dict[str, str]]:
    return [{"Id": i, "MessageBody": b} for i, b in bodies.items()]


def test_message_body_is_the_worker_contract_for_any_key():
    key = "dir with space/ünïcode+plus%25?&=.csv"
    body = json.loads(message_body(Source("in", key, '"abc"'), query="SELECT * FROM S3Object"))
    assert body == {
        "version": 1,
        "bucket": "in",
        "key": key,
        "etag": '"abc"',
        "query": "SELECT * FROM S3Object",
    }


def test_only_the_failed_entries_of_a_batch_are_sent_again(sqs, monkeypatch):
    monkeypatch.setattr(seed_module, "ENTRY_BACKOFF", 0)
    bodies = [f"m{i}" for i in range(4)]
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": i, "MessageId": i, "MD5OfMessageBody": "x"} for i in ("0", "2")
                ],
                "Failed": [
                    {"Id": "1", "SenderFault": False, "Code": "InternalError"},
                    {"Id": "3", "SenderFault": False, "Code": "InternalError"},
                ],
            },
            {"QueueUrl": QUEUE, "Entries": entries({str(i): b for i, b in enumerate(bodies)})},
        )
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": i, "MessageId": i, "MD5OfMessageBody": "x"} for i in ("1", "3")
                ],
                "Failed": [],
            },
            {"QueueUrl": QUEUE, "Entries": entries({"1": "m1", "3": "m3"})},
        )
        sent, failures = send_batch(sqs, QUEUE, bodies)
        stub.assert_no_pending_responses()
    assert (sent, failures) == (4, [])


def test_sender_faults_are_reported_not_retried(sqs):
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [{"Id": "0", "MessageId": "0", "MD5OfMessageBody": "x"}],
                "Failed": [
                    {
                        "Id": "1",
                        "SenderFault": True,
                        "Code": "InvalidMessageContents",
                        "Message": "bad",
                    }
                ],
            },
        )
        sent, failures = send_batch(sqs, QUEUE, ["ok", "bad body"])
    assert sent == 1
    assert [(f.body, f.code) for f in failures] == [("bad body", "InvalidMessageContents")]


# SQS takes a message of at most 1 MiB and a SendMessageBatch of at most 10 entries whose bodies
# total at most 1 MiB (BatchRequestTooLong): "Amazon SQS message quotas",
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
# The emulators take more, so these limits are tested here, on bytes of UTF-8.


def batch_sizes(monkeypatch, bodies: list[str]) -> list[int]:
    """Send ``bodies`` through send_messages; return how many entries each batch carried."""
    batches: list[list[str]] = []

    def record(sqs, queue_url, batch):
        batches.append(batch)
        return len(batch), []

    monkeypatch.setattr(seed_module, "send_batch", record)
    sent, failures = send_messages(None, QUEUE, bodies, concurrency=1, on_sent=lambda n: None)
    assert (sent, failures) == (len(bodies), [])
    assert [body for batch in batches for body in batch] == bodies, "all sent, in order"
    return [len(batch) for batch in batches]


def test_batches_carry_at_most_ten_entries(monkeypatch):
    assert batch_sizes(monkeypatch, [f"m{i}" for i in range(25)]) == [10, 10, 5]


def test_batches_are_cut_at_1_mib_of_utf8_bodies(monkeypatch):
    half = "é" * (MAX_BATCH_BYTES // 4)  # 524,288 bytes in 262,144 characters
    assert batch_sizes(monkeypatch, [half, half]) == [2], "exactly 1 MiB fits"
    assert batch_sizes(monkeypatch, [half, half + "x"]) == [1, 1], "one byte more does not"
    third = "é" * 200_000  # 400,000 bytes: two fit, three would be 1.2 MB
    assert batch_sizes(monkeypatch, [third, third, third, "m"]) == [2, 2]


def test_a_body_over_1_mib_is_reported_and_never_sent(sqs):
    with in_memory_bucket("src", {"a.csv": b"x", "ab.csv": b"x"}) as s3:
        etag = s3.head_object(Bucket="src", Key="a.csv")["ETag"]
        # A query (multi-byte, so characters < bytes) that makes a.csv's body exactly 1 MiB;
        # ab.csv's body, one byte longer, is over.
        query = "é" * 400_000
        pad = MAX_MESSAGE_BYTES - len(message_body(Source("src", "a.csv", etag), query).encode())
        query += "x" * pad
        fits = message_body(Source("src", "a.csv", etag), query)
        over = message_body(Source("src", "ab.csv", etag), query)
        assert len(fits.encode()) == MAX_MESSAGE_BYTES == len(over.encode()) - 1

        dry = seed(s3, sqs, queue_url=QUEUE, bucket="src", query=query, dry_run=True)
        with Stubber(sqs) as stub:
            stub.add_response(
                "send_message_batch",
                {
                    "Successful": [{"Id": "0", "MessageId": "0", "MD5OfMessageBody": "x"}],
                    "Failed": [],
                },
                {"QueueUrl": QUEUE, "Entries": entries({"0": fits})},
            )
            report = seed(s3, sqs, queue_url=QUEUE, bucket="src", query=query)
            stub.assert_no_pending_responses()
    for result in (dry, report):
        assert (result.listed, result.sent) == (2, 1)
        assert [(f.body, f.code) for f in result.failures] == [(over, "MessageTooLong")]
        assert "1,048,577 bytes" in result.failures[0].message


def test_a_query_too_long_for_any_message_is_refused_before_listing(sqs):
    with pytest.raises(ValueError, match="shorten the query"):
        seed(None, sqs, queue_url=QUEUE, bucket="src", query="q" * MAX_MESSAGE_BYTES)


def test_skip_done_finds_results_whose_keys_were_shortened():
    prefix = "deep/" + "é" * 500  # with the output prefix, too long for a whole output key
    keys = [prefix + "1.csv", prefix + "2.csv"]
    with in_memory_bucket("src", dict.fromkeys(keys, b"x")) as s3:
        s3.create_bucket(Bucket="dst")
        etag = s3.head_object(Bucket="src", Key=keys[0])["ETag"]
        done = derive_output_key("results/", "src", keys[0], etag)
        assert len(done.encode()) <= 1024
        s3.put_object(Bucket="dst", Key=done, Body=b"{}")
        report = seed(
            s3,
            None,
            queue_url=QUEUE,
            bucket="src",
            prefix=prefix,
            skip_done=True,
            output_bucket="dst",
            output_prefix="results/",
            dry_run=True,
        )
    assert (report.listed, report.skipped_done, report.sent) == (2, 1, 1)
    assert json.loads(report.samples[0])["key"] == keys[1]


def test_skip_done_counts_only_results_of_the_same_recipe():
    """A result made with other code or another limit is not done: the rerun must redo it."""
    keys = ["in/1.csv", "in/2.csv"]
    workers = Recipe(query="SELECT * FROM S3Object s LIMIT 5", code="img@sha256:1\nrows-to-json")
    with in_memory_bucket("src", dict.fromkeys(keys, b"id\n1\n")) as s3:
        s3.create_bucket(Bucket="dst")
        etag = s3.head_object(Bucket="src", Key=keys[0])["ETag"]
        s3.put_object(
            Bucket="dst",
            Key=derive_output_key("results/", "src", keys[0], etag, workers),
            Body=b"{}",
        )

        def skipped(recipe: Recipe) -> int:
            return seed(
                s3,
                None,
                queue_url=QUEUE,
                bucket="src",
                skip_done=True,
                recipe=recipe,
                output_bucket="dst",
                dry_run=True,
            ).skipped_done

        assert skipped(workers) == 1
        assert skipped(replace(workers, code="img@sha256:2\nrows-to-json")) == 0
        assert skipped(replace(workers, query="SELECT * FROM S3Object s LIMIT 2")) == 0
