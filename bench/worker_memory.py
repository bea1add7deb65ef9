"""The whole worker on one large source: peak RSS per worker process, against issue 14's budgets.

``bench/query_engine.py`` measures the query engine alone; this runs ``python -m worker`` as
the job definition does (``WORKER_PROCESSES=2``, the local engine) on a generated CSV of the
given size, one message per process, and reads each process's own peak RSS (``VmHWM``, from
its summary line), so threads, clients, heartbeat, upload buffers and the rows on their way
to the custom code are all counted. The scenarios:

* the original job: ``LIMIT 10000``, rows-to-json (the Python evaluator: budget 128 MiB);
* ``SELECT *`` of the whole object streamed to a command's stdin (``wc -c``);
* ``WHERE`` + ``SUM``, run by the fast path where it can (budget 256 MiB).

The job definition's default memory is sized from these figures (terraform/modules/batch).

    python bench/worker_memory.py [--size-mib 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boto3.s3.transfer import TransferConfig  # noqa: E402

from batchspot.emulators import Emulator, moto_server  # noqa: E402
from batchspot.fleet import Fleet, worker_env  # noqa: E402
from batchspot_support.chaos.stack import clients  # noqa: E402
from bench.query_engine import BUDGETS_MIB, QUERIES, generate  # noqa: E402

QUERY_LIMIT = 10_000
PROCESSES = 2
SCENARIOS: dict[str, dict[str, Any]] = {
    f"LIMIT {QUERY_LIMIT}, rows-to-json": {
        "env": {"S3_QUERY_LIMIT": str(QUERY_LIMIT)},
        "budget_mib": BUDGETS_MIB["evaluator"],
    },
    "SELECT *, streamed to a command": {
        "env": {"HANDLER_COMMAND": "wc -c"},
        "budget_mib": BUDGETS_MIB["fast path"],
    },
    "WHERE + SUM, rows-to-json": {
        "query": QUERIES["WHERE + SUM"],
        "budget_mib": BUDGETS_MIB["fast path"],
    },
}
ORIGINAL_JOB = f"LIMIT {QUERY_LIMIT}, rows-to-json"


def measure(
    emulator: Emulator, size_mib: int, log_dir: Path, scenario: str = ORIGINAL_JOB
) -> dict[str, Any]:
    """Store a ``size_mib`` CSV, let one worker container process it; return its figures.

    ``peak_rss_mib`` is the largest worker process's peak; ``process_peaks_mib`` each one's.
    """
    settings = SCENARIOS[scenario]
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
    message = {"bucket": bucket, "key": "large.csv"}
    if "query" in settings:
        message["query"] = settings["query"]
    # One message per process: each takes one (WORKER_CONCURRENCY 1), so each peak is one
    # item's. The output keys differ by output_key, as the same source is read twice.
    for index in range(PROCESSES):
        body = {**message, "output_key": f"results/memory-{index}.json"}
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
    env = worker_env(
        emulator.client_env(),
        queue_url,
        bucket,
        QUERY_ENGINE="local",
        WORKER_PROCESSES=str(PROCESSES),
        WORKER_CONCURRENCY="1",
        IDLE_EXIT_SECONDS="1",
        **settings.get("env", {}),
    )
    fleet = run_container(env, log_dir)
    items = [event for _, event in fleet.events("item")]
    failed = [item["reason"] for item in items if item["outcome"] != "ok"]
    if failed or len(items) != PROCESSES:
        raise RuntimeError(f"the worker failed the large source: {failed}; see {log_dir}")
    peaks = [summary["peak_rss_mib"] for _, summary in fleet.events("summary")]
    return {
        "scenario": scenario,
        "object_bytes": size,
        "rows": rows,
        "query_limit": QUERY_LIMIT if scenario == ORIGINAL_JOB else None,
        "item_ms": max(item["duration_ms"] for item in items),
        "bytes_in": max(item["bytes_in"] for item in items),
        "peak_rss_mib": max(peaks),
        "process_peaks_mib": peaks,
        "budget_mib": settings["budget_mib"],
    }


def run_container(env: dict[str, str], log_dir: Path) -> Fleet:
    """Run one worker container (``python -m worker``) to its end; return it for its logs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(env, log_dir)
    fleet.start(0)
    if not fleet.wait(timeout=1800):
        fleet.kill_all()
        raise RuntimeError(f"the worker did not finish; see {log_dir}")
    return fleet


def main() -> None:
    """Run every scenario on one moto server; print a line each, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp,
        moto_server(Path(tmp)) as emulator,
    ):
        results = [
            measure(emulator, args.size_mib, Path(tmp) / f"s{n}", scenario)
            for n, scenario in enumerate(SCENARIOS)
        ]
    print(f"worker processes on a {args.size_mib} MiB CSV, WORKER_PROCESSES={PROCESSES}")
    for r in results:
        verdict = "within" if r["peak_rss_mib"] <= r["budget_mib"] else "OVER"
        print(
            f"  {r['scenario']:34} peak RSS per process {r['process_peaks_mib']} MiB "
            f"({verdict} {r['budget_mib']} MiB), {r['bytes_in']} bytes of rows, "
            f"item {r['item_ms']} ms"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
