"""WORKER_PROCESSES=1 against 2 on CPU-bound items: does a 2-vCPU container use both?

Issue 14's goal: a 2-vCPU container reaches at least 1.8x one process on CPU-bound items.
Both runs drain the same items from a freshly seeded queue on moto's server, with the same
``WORKER_CONCURRENCY``; each item's custom code does a fixed amount of pure-Python work
(:func:`bench.cpu_handler.burn`, under the GIL as a Python handler or the query's Python
evaluator is), so one process is bound to one vCPU whatever its threads. Items/s is counted
from the first process's start to the last item stored, from the workers' own log lines, so
the idle exit is not counted. Only a quiet machine with at least 2 CPUs gives a figure that
means anything.

    python bench/worker_processes.py [--items 40] [--work 300000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchspot.emulators import moto_server  # noqa: E402
from batchspot.fleet import worker_env  # noqa: E402
from batchspot_support.chaos.stack import clients  # noqa: E402
from bench.cpu_handler import HANDLER, WORK_ENV  # noqa: E402
from bench.worker_memory import run_container  # noqa: E402
from worker.limits import MAX_BATCH_ENTRIES, chunked  # noqa: E402

GOAL = 1.8
# Two threads per process: CPU-bound items gain nothing from more, and a process prefetches
# two messages per thread, so fewer threads share the last items out more evenly.
CONCURRENCY = 2


def drain(emulator: Any, processes: int, items: int, work: int, log_dir: Path) -> dict[str, Any]:
    """Seed ``items`` items and let one container of ``processes`` processes drain them."""
    s3, sqs = clients(emulator)
    name = f"bench-procs-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    for index in range(items):
        s3.put_object(Bucket=name, Key=f"src/{index}.csv", Body=f"id,v\n{index},{index}\n".encode())
    bodies = [json.dumps({"bucket": name, "key": f"src/{i}.csv"}) for i in range(items)]
    for batch in chunked(bodies, MAX_BATCH_ENTRIES):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    env = worker_env(
        emulator.client_env(),
        queue_url,
        name,
        HANDLER=HANDLER,
        QUERY_ENGINE="local",
        WORKER_PROCESSES=str(processes),
        WORKER_CONCURRENCY=str(CONCURRENCY),
        IDLE_EXIT_SECONDS="1",
        **{WORK_ENV: str(work)},
    )
    fleet = run_container(env, log_dir)
    starts = [event["ts"] for _, event in fleet.events("start")]
    done = [event for _, event in fleet.events("item") if event["outcome"] == "ok"]
    if len(done) != items:
        raise RuntimeError(f"{len(done)} of {items} items stored; see {log_dir}")
    seconds = max(event["ts"] for event in done) - min(starts)
    summaries = [summary for _, summary in fleet.events("summary")]
    return {
        "processes": processes,
        "items": items,
        "seconds": round(seconds, 2),
        "items_per_s": round(items / seconds, 2),
        "aws_calls_per_item": round(sum(sum(s["calls"].values()) for s in summaries) / items, 3),
        "peak_rss_mib": [s["peak_rss_mib"] for s in summaries],
    }


def main() -> None:
    """Run both contenders on one moto server; print a table, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--work", type=int, default=300_000, help="hash rounds per item")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-procs-") as tmp,
        moto_server(Path(tmp)) as emulator,
    ):
        runs = [
            drain(emulator, processes, args.items, args.work, Path(tmp) / f"p{processes}")
            for processes in (1, 2)
        ]
    speedup = runs[1]["items_per_s"] / runs[0]["items_per_s"]
    print(
        f"CPU-bound items ({args.work} hash rounds each), {args.items} items, {os.cpu_count()} CPUs"
    )
    for run in runs:
        print(
            f"  WORKER_PROCESSES={run['processes']}: {run['items_per_s']:7.2f} items/s "
            f"({run['seconds']} s), {run['aws_calls_per_item']} AWS calls per item, "
            f"peak RSS per process {run['peak_rss_mib']} MiB"
        )
    verdict = "meets" if speedup >= GOAL else "misses"
    print(f"  speedup {speedup:.2f}x ({verdict} the {GOAL}x goal)")
    print(json.dumps({"runs": runs, "speedup": round(speedup, 3), "goal": GOAL, "at": time.time()}))


if __name__ == "__main__":
    main()
