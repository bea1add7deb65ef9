"""The local query engine on a large CSV: bytes fetched for LIMIT, peak memory, throughput.

Generates a CSV of ``--size-mib`` (1 GiB by default) in a temporary directory, serves it from
moto's server, and runs each query in a fresh ``python`` child process (so each peak RSS is
that query's own), reading the object over HTTP exactly as the worker does. The child reports
the engine's own byte counter and ``ru_maxrss``. Prints a table, then one JSON line.

    python bench/query_engine.py [--size-mib 1024]     (or: invoke bench-query)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchspot.emulators import moto_server  # noqa: E402

BUCKET = "bench-query"
KEY = "large.csv"
HEADER = "id,name,value,category,comment\n"
QUERIES = {
    "LIMIT 10000": "SELECT * FROM S3Object s LIMIT 10000",
    "COUNT(*), no LIMIT": "SELECT COUNT(*) FROM S3Object s",
    "WHERE + SUM, no LIMIT": (
        "SELECT SUM(CAST(s.value AS INT)) FROM S3Object s WHERE s.category = 'c7'"
    ),
    # Issue 11's hostile pattern: n^9 steps for a backtracking regex, linear here.
    "LIKE '%a%a...%b', no LIMIT": (
        "SELECT COUNT(*) FROM S3Object s WHERE s.comment LIKE '%a%a%a%a%a%a%a%a%b'"
    ),
}
MEMORY_BUDGET_MIB = 128  # the original job definition's memory


def generate(path: Path, size: int) -> int:
    """Write a CSV of about ``size`` bytes (quoted fields with commas included); return rows."""
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        written = len(HEADER)
        while written < size:
            block = "".join(
                f"{rows + i},name-{(rows + i) % 9973},{(rows + i) % 1000},c{i % 10},"
                f'"a comment, with a comma, padding the row to about a hundred bytes"\n'
                for i in range(10_000)
            )
            out.write(block)
            written += len(block)
            rows += 10_000
    return rows


def child(sql: str) -> None:
    """Run one query with the local engine and print what it cost (in the child process)."""
    from worker.messages import InputFormat
    from worker.query import QueryRequest, run_query

    started = time.monotonic()
    result = run_query(boto3.client("s3"), QueryRequest(BUCKET, KEY, sql, InputFormat()), "local")
    seconds = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "bytes_fetched": result.bytes_scanned,
        "records": result.text.count("\n"),
        "output_bytes": len(result.text),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }
    print(json.dumps(report))


def run_child(sql: str, env: dict[str, str]) -> dict[str, float]:
    """Run :func:`child` in a fresh interpreter so that its peak RSS is its own."""
    command = [sys.executable, __file__, "--child", sql]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"query {sql!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--child", metavar="SQL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        data = Path(tmp) / KEY
        started = time.monotonic()
        rows = generate(data, args.size_mib << 20)
        size = data.stat().st_size
        print(
            f"generated {size / 2**20:.0f} MiB, {rows} rows in {time.monotonic() - started:.0f} s"
        )
        with moto_server(Path(tmp) / "logs") as emulator:
            env = {**os.environ, **emulator.client_env(), "AWS_EC2_METADATA_DISABLED": "true"}
            os.environ.update(emulator.client_env())
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            transfer = TransferConfig(multipart_chunksize=64 << 20, max_concurrency=2)
            s3.upload_file(str(data), BUCKET, KEY, Config=transfer)
            data.unlink()  # moto holds it now; keep the disk free
            results = {name: run_child(sql, env) for name, sql in QUERIES.items()}
    limited = results["LIMIT 10000"]
    needed = len(HEADER) + round(size / rows * 10_000)
    print(f"\nobject: {size / 2**20:.0f} MiB CSV, {rows} rows; budget {MEMORY_BUDGET_MIB} MiB")
    print(f"{'query':<24}{'fetched MiB':>12}{'records':>10}{'seconds':>9}{'MB/s':>8}{'RSS MiB':>9}")
    for name, r in results.items():
        rate = r["bytes_fetched"] / 1e6 / max(r["seconds"], 1e-3)
        print(
            f"{name:<24}{r['bytes_fetched'] / 2**20:>12.2f}{r['records']:>10}"
            f"{r['seconds']:>9.2f}{rate:>8.1f}{r['peak_rss_mib']:>9.1f}"
        )
    print(
        f"LIMIT 10000 needs ~{needed / 2**20:.2f} MiB of rows; fetched "
        f"{limited['bytes_fetched'] / 2**20:.2f} MiB (bound: 2x + 1 MiB first range)"
    )
    print(json.dumps({"object_bytes": size, "rows": rows, "needed_bytes": needed, **results}))


if __name__ == "__main__":
    main()
