"""seed, submit, status and redrive against the emulator, as an operator runs them."""

import json
import time

import boto3
import pytest

from batchspot.aws import client
from batchspot.redrive import redrive
from batchspot.seed import seed
from batchspot.status import latest_job, snapshot, watch
from batchspot.submit import SubmitError, resolve_size, submit
from tests.integration.harness import send_all
from tests.integration.ops_support import make_batch, make_queues, unique, use_emulator
from worker.keys import derive_batch_key, derive_output_key
from worker.limits import MAX_BATCH_ENTRIES
from worker.messages import WorkBatch, WorkItem, parse_message
from worker.queue_depth import queue_counts

KEYS = [f"data/part {i:03d}.csv" for i in range(100)] + [
    "data/ünïcode & spaces+plus.csv",
    "data/notes.txt",
    "data/folder/",
]
CSV_KEYS = sorted(k for k in KEYS if k.endswith(".csv"))


@pytest.fixture(scope="module", autouse=True)
def aws(emulator):
    with use_emulator(emulator):
        yield


@pytest.fixture(scope="module")
def buckets(aws):
    """An input bucket holding KEYS and an empty output bucket: (input, output)."""
    s3 = boto3.client("s3")
    inputs, outputs = unique("inputs"), unique("outputs")
    for bucket in (inputs, outputs):
        s3.create_bucket(Bucket=bucket)
    for key in KEYS:
        s3.put_object(Bucket=inputs, Key=key, Body=b"" if key.endswith("/") else b"a,b\n1,2\n")
    return inputs, outputs


@pytest.fixture(scope="module")
def stack(aws):
    return make_batch("ops-queue", max_vcpus=32, vcpus=4)


def drain(queue_url: str) -> list[str]:
    """Receive and delete everything, as the workers would; return the bodies."""
    sqs = boto3.client("sqs")
    bodies = []
    while messages := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=MAX_BATCH_ENTRIES
    ).get("Messages", []):
        bodies += [m["Body"] for m in messages]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
    return bodies


def run_seed(buckets, queue_url: str, **options):
    return seed(client("s3"), client("sqs"), queue_url=queue_url, bucket=buckets[0], **options)


def test_seed_sends_one_parseable_message_per_matching_object(buckets):
    queue_url, _ = make_queues("seed-all")
    started = time.perf_counter()
    report = run_seed(buckets, queue_url, prefix="data/", suffix=".csv", concurrency=4)
    elapsed = time.perf_counter() - started

    assert (report.listed, report.sent, report.failures) == (101, 101, [])
    items = [parse_message(body) for body in drain(queue_url)]
    assert all(isinstance(item, WorkItem) and item.etag for item in items)
    assert sorted(item.key for item in items) == CSV_KEYS
    print(f"seed: 101 messages in {elapsed:.2f} s ({101 / elapsed:.0f} msg/s)")


def test_dry_run_sends_nothing_and_max_count_bounds_the_messages(buckets):
    queue_url, _ = make_queues("seed-dry")
    report = run_seed(buckets, queue_url, prefix="data/", max_count=7, dry_run=True)
    assert report.sent == 7 and len(report.samples) == 3
    assert "would send 7" in report.summary()
    assert queue_counts(client("sqs"), queue_url).total == 0


def test_skip_done_leaves_out_sources_whose_result_is_stored(buckets):
    inputs, outputs = buckets
    queue_url, _ = make_queues("seed-skip")
    s3 = boto3.client("s3")
    done = CSV_KEYS[:30]
    for key in done:
        etag = s3.head_object(Bucket=inputs, Key=key)["ETag"]
        result_key = derive_output_key("results/", inputs, key, etag)
        s3.put_object(Bucket=outputs, Key=result_key, Body=b"{}")

    report = run_seed(
        buckets, queue_url, prefix="data/", suffix=".csv", skip_done=True, output_bucket=outputs
    )

    assert (report.skipped_done, report.sent) == (30, 71)
    sent_keys = {json.loads(body)["key"] for body in drain(queue_url)}
    assert sent_keys == set(CSV_KEYS) - set(done)


def test_seed_batches_name_each_object_once_and_skip_done_skips_a_stored_batch(buckets):
    """Keys with spaces, unicode and + travel in batch messages through SQS and back."""
    queue_url, _ = make_queues("seed-batches")
    report = run_seed(buckets, queue_url, prefix="data/", suffix=".csv", batch_size=7)

    assert (report.listed, report.items, report.sent, report.failures) == (101, 101, 15, [])
    assert "sent 101 items in 15 messages" in report.summary()
    bodies = drain(queue_url)
    batches = [parse_message(body) for body in bodies]
    assert all(isinstance(batch, WorkBatch) and len(batch.items) <= 7 for batch in batches)
    s3 = boto3.client("s3")
    listed = sorted((key, s3.head_object(Bucket=buckets[0], Key=key)["ETag"]) for key in CSV_KEYS)
    assert sorted((item.key, item.etag) for batch in batches for item in batch.items) == listed

    # A worker stored the batch holding the unicode key; the same seed again skips just it.
    (stored,) = [b for b in batches if "data/ünïcode & spaces+plus.csv" in {i.key for i in b.items}]
    s3.put_object(Bucket=buckets[1], Key=derive_batch_key("results/", stored.items), Body=b"")
    again = run_seed(
        buckets, queue_url, prefix="data/", suffix=".csv", batch_size=7, skip_done=True,
        output_bucket=buckets[1],
    )  # fmt: skip
    skipped = len(stored.items)
    assert (again.skipped_done, again.items, again.sent) == (skipped, 101 - skipped, 14)
    kept = [body for body, batch in zip(bodies, batches, strict=True) if batch != stored]
    assert sorted(drain(queue_url)) == sorted(kept), "the other batches formed as before"


@pytest.mark.moto_only
def test_submit_auto_sizes_from_the_queue_and_status_shows_the_children(buckets, stack):
    queue_url, dlq_url = make_queues("submit-auto")
    run_seed(buckets, queue_url, prefix="data/", suffix=".csv", max_count=50)
    sqs, batch = client("sqs"), client("batch")

    def auto(per_worker: int) -> int:
        return resolve_size(
            "auto",
            sqs=sqs,
            batch=batch,
            queue_url=queue_url,
            job_queue=stack.job_queue,
            job_definition=stack.job_definition,
            per_worker=per_worker,
        )

    assert auto(per_worker=10) == 5  # 50 messages / 10 each
    assert auto(per_worker=1) == 8  # capped: 32 vCPUs hold 8 children of 4 vCPUs

    job = submit(
        batch,
        job_queue=stack.job_queue,
        job_definition=stack.job_definition,
        size=5,
        env={"S3_QUERY_LIMIT": "10"},
    )
    assert f"invoke status --job-id {job.job_id} --watch" in job.summary()
    child = batch.describe_jobs(jobs=[f"{job.job_id}:0"])["jobs"][0]
    assert {"name": "S3_QUERY_LIMIT", "value": "10"} in child["container"]["environment"]

    assert latest_job(batch, stack.job_queue, "batchspot") == job.job_id
    state = snapshot(sqs, batch, queue_url=queue_url, dlq_url=dlq_url, job_id=job.job_id)
    assert (state.queue.visible, state.dead_letters.total) == (50, 0)
    assert state.job.size == 5 and state.job.children["SUCCEEDED"] == 5
    assert "5 children: SUCCEEDED 5" in state.render()


@pytest.mark.moto_only
def test_size_one_is_a_plain_job_and_an_empty_queue_is_refused(stack):
    batch = client("batch")
    job = submit(batch, job_queue=stack.job_queue, job_definition=stack.job_definition, size=1)
    assert "arrayProperties" not in batch.describe_jobs(jobs=[job.job_id])["jobs"][0]
    queue_url, _ = make_queues("submit-empty")
    with pytest.raises(SubmitError, match="empty"):
        resolve_size(
            "auto",
            sqs=client("sqs"),
            batch=batch,
            queue_url=queue_url,
            job_queue=stack.job_queue,
            job_definition=stack.job_definition,
        )


def test_watch_ends_when_the_queue_drains(buckets):
    queue_url, dlq_url = make_queues("watch")
    run_seed(buckets, queue_url, prefix="data/", max_count=20)
    sqs = client("sqs")
    reads = 0

    def read():
        nonlocal reads
        reads += 1
        if reads == 2:
            drain(queue_url)  # the workers' part
        return snapshot(sqs, None, queue_url=queue_url, dlq_url=dlq_url, job_id=None)

    final = watch(read, interval=0, sleep=lambda _: None)
    assert final.queue.total == 0 and reads == 2


def test_redrive_moves_every_dead_letter_back_with_its_body():
    queue_url, dlq_url = make_queues("redrive")
    sqs = client("sqs", attempts=2)
    bodies = [json.dumps({"bucket": "b", "key": f"data/part {i:03d}.csv"}) for i in range(25)]
    send_all(sqs, dlq_url, bodies)

    report = redrive(sqs, dlq_url=dlq_url, queue_url=queue_url)

    assert report.moved == 25 and report.failed == 0
    if report.task_handle is None:  # moto lacks StartMessageMoveTask: the fallback ran
        assert queue_counts(sqs, dlq_url).total == 0
        assert sorted(drain(queue_url)) == sorted(bodies)


def test_redrive_with_a_limit_moves_only_that_many():
    queue_url, dlq_url = make_queues("redrive-max")
    sqs = client("sqs")
    sqs.send_message_batch(
        QueueUrl=dlq_url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
    )
    report = redrive(sqs, dlq_url=dlq_url, queue_url=queue_url, max_messages=4)
    assert (report.method, report.moved) == ("receive/send/delete", 4)
    assert queue_counts(sqs, queue_url).visible == 4
