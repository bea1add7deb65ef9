"""The worker over many small objects: batch messages against one message per object.

Issue 23's goal: with batches of 100, at most 0.02 S3 PUTs and at most 1.1 AWS calls per item
(per-item messages pay one PUT and about 2.2 calls each). Both runs drain small one-row CSV
sources from a fresh queue on LocalStack, started natively as ``invoke bench`` starts it, with
the built-in handler and the local engine. The figures come from the worker's own ``summary``
lines: the calls it counted through botocore's hooks, divided by the items it settled, and
priced per million items as ``invoke cost --requests`` prices a run (``batchspot.cost.requests``).
The batch messages are built by the seeder's own ``batchspot.batching``.

    python bench/worker_batches.py [--items 10000] [--batch-size 100] [--single-items 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchspot.batching import Batching  # noqa: E402
from batchspot.cost.requests import is_write_class, request_cost  # noqa: E402
from batchspot.emulators import Emulator, emulator_at  # noqa: E402
from batchspot.fleet import worker_env  # noqa: E402
from batchspot.seed import message_body, send_batch  # noqa: E402
from batchspot.sources import Source  # noqa: E402
from batchspot_support.chaos.stack import clients  # noqa: E402
from worker.limits import MAX_BATCH_ENTRIES, chunked  # noqa: E402
from worker.logs import records  # noqa: E402

GOALS = {"puts_per_item": 0.02, "calls_per_item": 1.1}


def drain(emulator: Any, items: int, batch_size: int) -> dict[str, Any]:
    """Upload ``items`` sources, queue them (in batches of ``batch_size``, or 1 each), drain."""
    s3, sqs = clients(emulator)
    name = f"bench-batches-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    queue_url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "120"})[
        "QueueUrl"
    ]
    keys = [f"src/{index:06d}.csv" for index in range(items)]

    def put(key: str) -> Source:
        etag = s3.put_object(Bucket=name, Key=key, Body=f"id,v\n{key},1\n".encode())["ETag"]
        return Source(name, key, etag)

    with ThreadPoolExecutor(8) as pool:
        sources = list(pool.map(put, keys))
    # The seeder's own messages (invoke seed --batch-size), so the figures are of its contract.
    if batch_size > 1:
        bodies = [batch.body for batch in Batching(batch_size).group(sources)]
    else:
        bodies = [message_body(source) for source in sources]
    for group in chunked(bodies, MAX_BATCH_ENTRIES):
        _, failed = send_batch(sqs, queue_url, list(group))
        if failed:
            raise RuntimeError(f"could not queue {len(failed)} messages: {failed[0]}")
    env = worker_env(
        emulator.client_env(),
        queue_url,
        name,
        QUERY_ENGINE="local",
        IDLE_EXIT_SECONDS="2",
        WORKER_CONCURRENCY="8",
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "worker"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    (summary,) = [r for r in records(done.stdout.splitlines()) if r["event"] == "summary"]
    if summary["items_ok"] != items:
        raise RuntimeError(f"{summary['items_ok']} of {items} items stored: {done.stdout[-3000:]}")
    calls = summary["calls"]
    puts = sum(count for operation, count in calls.items() if is_write_class(operation))
    return {
        "items": items,
        "batch_size": batch_size,
        "messages": len(bodies),
        "seconds": round(seconds, 1),
        "aws_calls": summary["aws_calls"],
        "calls_per_item": summary["aws_calls_per_item"],
        "puts_per_item": round(puts / items, 4),
        "usd_per_million_items": round(request_cost(calls, items).per_million_items, 2),
        "calls": calls,
    }


def main() -> None:
    """Run batches, then per-item messages, on one LocalStack; print a table, then JSON."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--single-items", type=int, default=1000)
    parser.add_argument("--endpoint", default="", help="an emulator to use (default: LocalStack)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batches-") as tmp:
        emulator: Emulator
        with emulator_at(args.endpoint or None, Path(tmp), "localstack") as emulator:
            runs = [
                drain(emulator, args.items, args.batch_size),
                drain(emulator, args.single_items, 1),
            ]
    print(f"worker over small objects on {emulator.name}, from its summary lines")
    for run in runs:
        shape = f"batches of {run['batch_size']}" if run["batch_size"] > 1 else "one per message"
        print(
            f"  {run['items']:>6} items, {shape:<16} {run['puts_per_item']:.4f} S3 PUTs/item, "
            f"{run['calls_per_item']:.3f} AWS calls/item, requests "
            f"${run['usd_per_million_items']:.2f} per million items "
            f"({run['seconds']} s incl. idle exit)"
        )
    batched = runs[0]
    met = all(batched[name] <= goal for name, goal in GOALS.items())
    goals = ", ".join(f"{name} <= {goal}" for name, goal in GOALS.items())
    print(f"  batches {'meet' if met else 'miss'} the goal ({goals})")
    print(json.dumps({"runs": runs, "goals": GOALS, "met": met, "at": time.time()}))


if __name__ == "__main__":
    main()
