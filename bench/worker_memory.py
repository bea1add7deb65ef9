"""The whole worker process on one large source: its peak RSS against the 128 MiB budget.

``bench/query_engine.py`` measures the query engine alone; this runs ``python -m worker`` as
the job definition does (the original job's ``S3_QUERY_LIMIT=10000``, the local engine, the
sample custom code) on a generated CSV of the given size, and reads the process's own peak
RSS (``VmHWM``), so threads, clients, heartbeat and upload buffers are all counted.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from batchspot import sample_code
from batchspot.chaos import clients
from batchspot.emulators import Emulator
from batchspot.fleet import Fleet, worker_env
from bench.query_engine import MEMORY_BUDGET_MIB, generate

QUERY_LIMIT = 10_000


def measure(emulator: Emulator, size_mib: int, log_dir: Path) -> dict[str, Any]:
    """Store a ``size_mib`` CSV, let one worker process it, return its peak RSS and timing."""
    s3, sqs = clients(emulator)
    bucket = f"bench-large-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        data = Path(tmp) / "large.csv"
        rows = generate(data, size_mib << 20)
        size = data.stat().st_size
        transfer = TransferConfig(multipart_chunksize=64 << 20, max_concurrency=2)
        s3.upload_file(str(data), bucket, "large.csv", Config=transfer)
    queue_url = sqs.create_queue(QueueName=f"bench-large-{time.time_ns()}")["QueueUrl"]
    body = json.dumps({"bucket": bucket, "key": "large.csv"})
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    env = worker_env(
        emulator,
        queue_url,
        bucket,
        HANDLER=sample_code.HANDLER,
        QUERY_ENGINE="local",
        S3_QUERY_LIMIT=str(QUERY_LIMIT),
        IDLE_EXIT_SECONDS="1",
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(env, log_dir)
    (child,) = [fleet.start(0)]
    if not fleet.wait(timeout=600):
        fleet.kill_all()
        raise RuntimeError(f"the worker did not finish the large source; see {log_dir}")
    (item,) = [event for _, event in fleet.events("item")]
    if item["outcome"] != "ok":
        raise RuntimeError(f"the worker failed the large source: {item['reason']}")
    peak = round((child.peak_rss_kib or 0) / 1024, 1)
    return {
        "object_bytes": size,
        "rows": rows,
        "query_limit": QUERY_LIMIT,
        "item_ms": item["duration_ms"],
        "bytes_in": item["bytes_in"],
        "peak_rss_mib": peak,
        "budget_mib": MEMORY_BUDGET_MIB,
    }
