"""The emulator-side set-up of a chaos run: its queues and buckets, its poison and hostile mix.

Everything here is what the run puts on the emulator and reads back from it; the driver
(:mod:`batchspot_support.chaos.driver`) decides when, the checker
(:mod:`batchspot_support.chaos.report`) what it means.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from batchspot import seed
from batchspot.aws import create_queue_with_dlq
from batchspot.batching import Batching
from batchspot.emulators import Emulator
from batchspot.sources import list_sources
from batchspot_support import sample_code
from batchspot_support.chaos.settings import ChaosSettings
from batchspot_support.hostile import CASES, QUERY_CASES, message_input
from worker.keys import Recipe, derive_output_key
from worker.limits import MAX_BATCH_ENTRIES, chunked
from worker.messages import parse_input_format

OUTPUT_PREFIX = "results/"
# The workers run the sample code with every other setting left at its default.
WORKER_RECIPE = Recipe(code=sample_code.HANDLER)

# The hostile mix: cases of batchspot_support.hostile (each with its query and input format), chosen
# so each cap of the local engine is met once: backtracking, concatenation, decompressed
# bytes, record size and nesting depth. Then output keys the worker must refuse for good.
HOSTILE_CASES = (
    "LIKE blow-up",
    "|| blow-up",
    "gzip bomb, 1 GiB of lines",
    "64 MiB CSV line in gzip",
    "100000-deep DOCUMENT",
)
BAD_OUTPUT_KEYS = {
    "outside": "elsewhere/result.json",
    "dotdot": f"{OUTPUT_PREFIX}../elsewhere/result.json",
}


@dataclass(frozen=True)
class ChaosStack:
    """A run's own queue with its DLQ, its input bucket and its versioned output bucket."""

    queue_url: str
    dlq_url: str
    input_bucket: str
    output_bucket: str


def clients(emulator: Emulator) -> tuple[Any, Any]:
    """S3 and SQS clients on the emulator, with its test credentials (never ~/.aws)."""
    config = Config(max_pool_connections=16)
    return emulator.client("s3", config), emulator.client("sqs", config)


def create_stack(s3: Any, sqs: Any, settings: ChaosSettings) -> ChaosStack:
    """Create a queue with its DLQ, an input bucket and a *versioned* output bucket."""
    suffix = uuid.uuid4().hex[:10]
    queue_url, dlq_url = create_queue_with_dlq(
        sqs, f"chaos-{suffix}", settings.visibility_timeout, settings.max_receive_count
    )
    stack = ChaosStack(queue_url, dlq_url, f"chaos-in-{suffix}", f"chaos-out-{suffix}")
    s3.create_bucket(Bucket=stack.input_bucket)
    s3.create_bucket(Bucket=stack.output_bucket)
    s3.put_bucket_versioning(
        Bucket=stack.output_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    return stack


def seed_batches(
    s3: Any, sqs: Any, stack: ChaosStack, prefix: str, batch_size: int
) -> dict[str, list[str]]:
    """Queue the sources under ``prefix`` as batch messages of ``batch_size`` items each.

    The messages are the seeder's own (``batchspot.batching``), so a run checks the contract
    ``invoke seed --batch-size`` sends. Return each batch's result key (as the worker derives
    it from the listed ETags) and the keys of its sources, the truth its lines are checked by.
    """
    batches = list(Batching(batch_size).group(list_sources(s3, stack.input_bucket, prefix)))
    for group in chunked([batch.body for batch in batches], MAX_BATCH_ENTRIES):
        _queue_all(sqs, stack, group, "batch")
    return {
        batch.result_key(OUTPUT_PREFIX, WORKER_RECIPE): [source.key for source in batch.sources]
        for batch in batches
    }


def seed_poison(s3: Any, sqs: Any, stack: ChaosStack) -> list[str]:
    """Queue one item of each kind that can never succeed; return their bodies."""
    poisoned = "poison/refused.csv"
    s3.put_object(
        Bucket=stack.input_bucket,
        Key=poisoned,
        Body=sample_code.source_csv([("p", sample_code.POISON_VALUE)]),
    )
    bodies = [
        "{not json",
        json.dumps({"bucket": stack.input_bucket}),
        json.dumps({"bucket": stack.input_bucket, "key": "poison/absent.csv"}),
        json.dumps({"bucket": stack.input_bucket, "key": poisoned}),
    ]
    _queue_all(sqs, stack, bodies, "poison")
    return bodies


@dataclass(frozen=True)
class HostileItem:
    """One message of the hostile mix, and where its result would be stored."""

    body: str
    source: str  # its key in the input bucket, under ``hostile/``
    result_key: str
    reason: str  # a fragment of the reason it is dead-lettered with, if it fails


def seed_hostile(s3: Any, sqs: Any, stack: ChaosStack) -> list[HostileItem]:
    """Upload and queue the hostile mix; return its items.

    A bad ``output_key`` names a healthy source, so if the worker took the key the result
    would really be written there, and the outside-prefix check would see it.
    """
    cases = {**QUERY_CASES, **CASES}
    items: list[HostileItem] = []
    for index, name in enumerate(HOSTILE_CASES):
        make, sql, fields, reason = cases[name]
        key = f"hostile/case-{index}.data"
        etag = s3.put_object(Bucket=stack.input_bucket, Key=key, Body=make())["ETag"]
        message = {"query": sql, "input": message_input({"csv_header": "USE", **fields})}
        body = json.dumps({"bucket": stack.input_bucket, "key": key, **message})
        recipe = WORKER_RECIPE.for_message(sql, parse_input_format(message["input"], key))
        result_key = derive_output_key(OUTPUT_PREFIX, stack.input_bucket, key, etag, recipe)
        items.append(HostileItem(body, key, result_key, reason))
    for name, output_key in BAD_OUTPUT_KEYS.items():
        key = f"hostile/output-key-{name}.csv"
        s3.put_object(Bucket=stack.input_bucket, Key=key, Body=sample_code.source_csv([]))
        body = json.dumps({"bucket": stack.input_bucket, "key": key, "output_key": output_key})
        items.append(HostileItem(body, key, output_key, "refused output_key"))
    _queue_all(sqs, stack, [item.body for item in items], "hostile")
    return items


def _queue_all(sqs: Any, stack: ChaosStack, bodies: list[str], kind: str) -> None:
    """Queue a few hand-made bodies; a run missing any of them would check the wrong thing."""
    sent, failed = seed.send_batch(sqs, stack.queue_url, bodies)
    if failed or sent != len(bodies):
        raise RuntimeError(f"could not queue the {kind} items: {failed}")


def stored_versions(s3: Any, bucket: str) -> dict[str, list[str]]:
    """Every version of every object in ``bucket``, by key."""
    versions: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            versions.setdefault(version["Key"], []).append(version["VersionId"])
    return versions


def received_bodies(sqs: Any, queue_url: str) -> list[str]:
    """Every body on a queue (hidden for a minute while counting, never deleted)."""
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=MAX_BATCH_ENTRIES,
            VisibilityTimeout=60,
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(m["Body"] for m in messages)
