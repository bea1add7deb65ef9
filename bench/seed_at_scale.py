"""``invoke bench-seed``: seeding from a generated S3 Inventory, and listing in parallel.

On one LocalStack started natively (or the emulator at ``--endpoint``):

* an inventory of N keys (CSV-gzip, then Parquet, 100,000 keys a file) is read whole by
  ``batchspot.seed`` in a dry run (every message body built, none sent), then a fresh queue
  is sent the first M of them, in batch messages of ``--batch-size`` keys (1: one message
  per key); each in a child process whose AWS calls are counted and whose peak RSS
  (``VmHWM``) is read at its end;
* K small objects under 16 prefixes are listed by one paginator and by 16 at once, on
  loopback and through a proxy adding a per-call latency (``bench.latency``). With
  ``--listing-emulator moto`` they are listed from moto's server run in this process instead,
  the objects put straight into its S3 backend: LocalStack stores objects too slowly for
  200,000 (16,000 took 46-85 s over HTTP), moto's backend takes 200,000 in seconds. Either
  emulator spends CPU on every page (moto scans the whole bucket for each), so each run also
  reports this process's CPU seconds: with moto that includes the server's.

The 10-million projection is arithmetic, printed with its inputs: SendMessageBatch calls
per key as measured, at a stated per-call latency, with the sender's concurrency.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from batchspot import seed
from batchspot.emulators import EMULATOR_ENV, LOOPBACK, Emulator, emulator_at
from batchspot.sources import list_sources, list_sources_parallel
from batchspot_support.chaos.stack import clients
from batchspot_support.inventory_files import write_inventory
from bench.latency import delayed
from worker.metrics import CallCounter

SOURCE_BUCKET = "bench-inventory-source"
PREFIXES = 16
SEND_CONCURRENCY = 16  # SendMessageBatch calls in flight (seed --concurrency)
PROJECTED_KEYS = 10_000_000


def inventory_rows(keys: int) -> Iterator[dict[str, Any]]:
    """Rows of a bucket of ``keys`` small objects under 16 prefixes."""
    for number in range(keys):
        yield {
            "bucket": SOURCE_BUCKET,
            "key": f"objects/{number % PREFIXES:02d}/part-{number:08d}.json",
            "size": 512,
            "e_tag": hashlib.md5(number.to_bytes(8, "big")).hexdigest(),
            "is_latest": True,
            "is_delete_marker": False,
        }


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def seed_child(manifest: str, queue_url: str, max_count: int, batch_size: int) -> None:
    """Seed from ``manifest`` (a dry run when ``queue_url`` is empty); print one JSON line.

    ``max_count`` counts messages, as ``invoke seed --max-count`` does.
    """
    counter = CallCounter()
    s3 = counter.attach(boto3.client("s3"))
    sqs = counter.attach(boto3.client("sqs", config=Config(max_pool_connections=SEND_CONCURRENCY)))
    started = time.monotonic()
    report = seed.seed(
        s3,
        sqs,
        queue_url=queue_url,
        bucket=SOURCE_BUCKET,
        inventory=manifest,
        max_count=max_count or None,
        dry_run=not queue_url,
        concurrency=SEND_CONCURRENCY,
        batch_size=batch_size if batch_size > 1 else None,
    )
    seconds = time.monotonic() - started
    keys = report.items if report.batched else report.sent
    calls = counter.snapshot()
    print(
        json.dumps(
            {
                "keys": keys,
                "messages": report.sent,
                "failed": len(report.failures),
                "seconds": round(seconds, 1),
                "keys_per_second": round(keys / seconds),
                "aws_calls": sum(calls.values()),
                "calls": dict(sorted(calls.items())),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def run_child(
    emulator: Emulator, manifest: str, queue_url: str, max_count: int, batch_size: int
) -> dict:
    """Run :func:`seed_child` in its own process, so its peak RSS is the seeder's alone."""
    env = {**os.environ, **EMULATOR_ENV, "AWS_ENDPOINT_URL": emulator.endpoint}
    arguments = [manifest, queue_url, str(max_count), str(batch_size)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.seed_at_scale", "child", *arguments],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_inventory(
    emulator: Emulator, keys: int, sent: int, file_format: str, batch_size: int
) -> dict:
    """Write an inventory of ``keys`` keys, read it all (dry run), then send ``sent`` of them."""
    s3, sqs = clients(emulator)
    bucket = f"bench-inventory-{file_format.lower()}-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    started = time.monotonic()
    manifest = write_inventory(s3, bucket, SOURCE_BUCKET, inventory_rows(keys), file_format)
    written = time.monotonic() - started
    read = run_child(emulator, manifest, "", 0, batch_size)
    queue_url = sqs.create_queue(QueueName=f"bench-inventory-{time.time_ns()}")["QueueUrl"]
    sending = run_child(emulator, manifest, queue_url, -(-sent // batch_size), batch_size)
    return {
        "format": file_format,
        "batch_size": batch_size,
        "write_seconds": round(written, 1),
        "read_all": read,
        "send": sending,
    }


def project(send: dict, latency_ms: float) -> dict:
    """Project seeding 10 M keys on AWS from the measured calls per key."""
    batches_per_key = send["calls"].get("sqs.SendMessageBatch", 0) / send["keys"]
    calls = PROJECTED_KEYS * batches_per_key
    return {
        "keys": PROJECTED_KEYS,
        "send_message_batch_calls": round(calls),
        "latency_ms_per_call": latency_ms,
        "concurrency": SEND_CONCURRENCY,
        "minutes": round(calls * latency_ms / 1000 / SEND_CONCURRENCY / 60, 1),
    }


# Puts one-byte objects with these keys into a bucket of the listing's emulator.
Store = Callable[[str, list[str]], None]


def prefixed_keys(keys: int) -> list[str]:
    """``keys`` object keys spread evenly over 16 prefixes."""
    return [f"p{number % PREFIXES:02d}/o-{number:07d}" for number in range(keys)]


def http_store(emulator: Emulator) -> Store:
    """Store objects with PutObject calls, 16 at once."""
    s3, _ = clients(emulator)

    def store(bucket: str, keys: list[str]) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))

    return store


@contextlib.contextmanager
def moto_in_process() -> Iterator[tuple[Emulator, Store]]:
    """Run moto's server in this process; store objects straight into its S3 backend."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    def store(bucket: str, keys: list[str]) -> None:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for key in keys:
            backend.put_object(bucket, key, b"x")

    try:
        yield Emulator("moto (in the bench process)", f"http://{host}:{port}"), store
    finally:
        server.stop()


def time_listing(emulator: Emulator, bucket: str, paginators: int) -> dict:
    """List ``bucket`` with one paginator, or fanned out; return seconds and calls."""
    counter = CallCounter()
    s3 = counter.attach(emulator.client("s3", Config(max_pool_connections=32)))
    started, cpu_started = time.monotonic(), time.process_time()
    sources = (
        list_sources(s3, bucket)
        if paginators == 1
        else list_sources_parallel(s3, bucket, paginators=paginators)
    )
    listed = sum(1 for _ in sources)
    return {
        "paginators": paginators,
        "keys": listed,
        "seconds": round(time.monotonic() - started, 2),
        "bench_process_cpu_seconds": round(time.process_time() - cpu_started, 2),
        "calls": sum(counter.snapshot().values()),
    }


def measure_listing(emulator: Emulator, store: Store, keys: int, latency_ms: float) -> dict:
    """Store ``keys`` objects under 16 prefixes; list them sequentially and fanned out."""
    s3, _ = clients(emulator)
    bucket = f"bench-listing-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    started = time.monotonic()
    store(bucket, prefixed_keys(keys))
    uploaded = time.monotonic() - started
    runs = [time_listing(emulator, bucket, n) for n in (1, PREFIXES)]
    with delayed(emulator.endpoint, latency_ms) as endpoint:
        proxied = Emulator(emulator.name, endpoint)
        runs += [
            {**time_listing(proxied, bucket, n), "added_latency_ms": latency_ms}
            for n in (1, PREFIXES)
        ]
    return {
        "emulator": emulator.name,
        "keys": keys,
        "prefixes": PREFIXES,
        "upload_seconds": round(uploaded, 1),
        "runs": runs,
    }


def run(
    keys: int,
    sent: int,
    batch_size: int,
    listing_keys: int,
    latency_ms: float,
    log_dir: Path,
    endpoint: str | None,
    listing_emulator: str = "localstack",
) -> dict:
    """Every measurement on one LocalStack (the listing on moto if asked); return the figures."""
    log_dir.mkdir(parents=True, exist_ok=True)
    needs_localstack = bool(keys) or (bool(listing_keys) and listing_emulator == "localstack")
    with (
        emulator_at(endpoint, log_dir, "localstack")
        if needs_localstack
        else contextlib.nullcontext()
    ) as emulator:
        inventories = [
            measure_inventory(emulator, keys, sent, file_format, batch_size)
            for file_format in ("CSV", "Parquet")
            if keys
        ]
        listing = None
        if listing_keys and listing_emulator == "moto":
            with moto_in_process() as (moto, store):
                listing = measure_listing(moto, store, listing_keys, latency_ms)
        elif listing_keys:
            listing = measure_listing(emulator, http_store(emulator), listing_keys, latency_ms)
    return {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inventories": inventories,
        "projection": [project(i["send"], latency_ms) for i in inventories[:1]],
        "listing": listing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    child = commands.add_parser("child")
    child.add_argument("manifest")
    child.add_argument("queue_url")
    child.add_argument("max_count", type=int)
    child.add_argument("batch_size", type=int)
    bench = commands.add_parser("run")
    bench.add_argument("--keys", type=int, default=1_000_000)
    bench.add_argument("--sent", type=int, default=50_000)
    bench.add_argument("--batch-size", type=int, default=100)
    bench.add_argument("--listing-keys", type=int, default=16_000)
    bench.add_argument("--latency-ms", type=float, default=20.0)
    bench.add_argument("--listing-emulator", choices=("localstack", "moto"), default="localstack")
    bench.add_argument("--out", type=Path, default=Path(".batchspot/bench/seed"))
    bench.add_argument("--endpoint", default="")
    args = parser.parse_args()
    if args.command == "child":
        seed_child(args.manifest, args.queue_url, args.max_count, args.batch_size)
        return
    figures = run(
        args.keys,
        args.sent,
        args.batch_size,
        args.listing_keys,
        args.latency_ms,
        args.out,
        args.endpoint or None,
        args.listing_emulator,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
