"""The local engine's two paths and DuckDB, side by side on one generated taxi-shaped CSV.

Generates a CSV of ``--size-mib`` (1 GiB by default) in a temporary directory and runs each
query with each contender in a fresh ``python`` child process, so each peak RSS is that run's
own:

* ``evaluator``: the local engine with the fast path switched off (the Python evaluator);
* ``fast path``: the local engine as the worker runs it (pyarrow where the query allows);
* ``duckdb``: DuckDB on one thread reading the file itself, the yardstick of issue 14.

Then (issue 22) the same CSV gzipped, on the fast path and in DuckDB; with ``--inputs json``,
the same trips as JSON lines, plain and gzipped, against DuckDB's ``read_json``; and Parquet: a
generated file of 20 columns (``c0`` sorted) of about the same size uncompressed, row groups of
~64 MiB, Snappy, read by the local engine (``parquet``) and by DuckDB's ``read_parquet`` on one
thread; for the local engine the GETs and the bytes fetched are printed too, against the
object's size.

The local engine reads through the same ranged GETs it makes on S3, answered from the file
(no emulator between: its CPU would be counted against the engine), and its output streams
through ``QueryResult.chunks()`` as the worker consumes it. MB/s per vCPU is the file's size
over the child's CPU seconds (user + system, all its threads) for the query, so it does not
depend on how busy the machine is; wall seconds are printed too. Imports (pyarrow, DuckDB) are
done before the clock starts: a worker process pays them once. Prints a table, then one JSON line.

    python bench/query_engine.py [--size-mib 1024] [--warm [N]] [--repeat N]  (invoke bench-query)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = "vendor_id,passenger_count,trip_distance,fare_amount,tip_amount,payment_type,zone\n"
LIMIT_ROWS = 10_000
QUERIES = {
    "COUNT(*)": "SELECT COUNT(*) FROM S3Object s",
    "WHERE + SUM": (
        "SELECT SUM(CAST(s.tip_amount AS FLOAT)) FROM S3Object s "
        "WHERE CAST(s.passenger_count AS INT) > 3"
    ),
    f"SELECT * LIMIT {LIMIT_ROWS}": f"SELECT * FROM S3Object s LIMIT {LIMIT_ROWS}",
    "SELECT *": "SELECT * FROM S3Object s",
}
CONTENDERS = ("evaluator", "fast path", "duckdb")
PARQUET_COLUMNS = 20
PARQUET_GROUP_BYTES = 64 << 20
PARQUET_CONTENDERS = ("parquet", "duckdb parquet")
GZIP_CONTENDERS = ("gzip fast path", "duckdb gzip")
# JSON lines: aggregates (the fast path runs no JSON rows), over integer, float and text fields.
JSON_QUERIES = {
    "COUNT(*)": "SELECT COUNT(*) FROM S3Object s",
    "WHERE + SUM": "SELECT SUM(s.tip_amount) FROM S3Object s WHERE s.passenger_count > 3",
    "MIN, MAX, AVG": (
        "SELECT MIN(s.fare_amount), MAX(s.zone), AVG(s.trip_distance) FROM S3Object s"
    ),
}


def parquet_queries(rows: int) -> dict[str, str]:
    """Issue 22's Parquet queries; the sorted column's WHERE matches 1% of ``rows``."""
    return {
        "COUNT(*)": "SELECT COUNT(*) FROM S3Object s",
        "WHERE + SUM": "SELECT SUM(s.c2) FROM S3Object s WHERE s.c1 > 3",
        f"SELECT * LIMIT {LIMIT_ROWS}": f"SELECT * FROM S3Object s LIMIT {LIMIT_ROWS}",
        "2 of 20 columns": "SELECT SUM(s.c3), MAX(s.c4) FROM S3Object s",
        "sorted WHERE, 1%": f"SELECT * FROM S3Object s WHERE s.c0 < {rows // 100}",
        "SELECT *": "SELECT * FROM S3Object s",
    }


def generate_parquet(path: Path, size: int) -> int:
    """Write 20 columns (int64, float64, text; ``c0`` sorted) of ~``size`` bytes uncompressed,
    one row group per ~64 MiB, Snappy; return the rows written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    row_bytes = 8 * 15 + 11 * 5  # 15 numeric columns and 5 texts of 11 characters
    group_rows = PARQUET_GROUP_BYTES // row_bytes
    total = max(1, size // row_bytes)
    writer = None
    for first in range(0, total, group_rows):
        ids = pa.array(range(first, min(total, first + group_rows)), pa.int64())
        columns = {"c0": ids, "c1": pc.bit_wise_and(ids, 7)}
        for i in range(2, PARQUET_COLUMNS):
            scrambled = pc.bit_wise_and(pc.multiply(ids, 2654435761 + i), 0xFFFFF)
            if i % 4 == 0:
                zone = pc.cast(pc.add(pc.bit_wise_and(scrambled, 0xFF), 100_000), pa.string())
                columns[f"c{i}"] = pc.binary_join_element_wise("zone ", zone, "")
            elif i % 2:
                columns[f"c{i}"] = scrambled
            else:
                columns[f"c{i}"] = pc.divide(pc.cast(scrambled, pa.float64()), 8.0)
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(
            path, table.schema, compression="snappy", write_page_index=True
        )
        writer.write_table(table, row_group_size=group_rows)
    if writer is not None:
        writer.close()
    return total


BUDGETS_MIB = {"evaluator": 128, "fast path": 256}  # issue 14's peak RSS per worker process


def generate(path: Path, size: int) -> int:
    """Write a taxi-shaped CSV of about ``size`` bytes (a quoted zone name); return its rows."""
    return _write_trips(
        path,
        size,
        lambda i: (
            f"{i % 2 + 1},{i % 6 + 1},{i % 97 / 10:.2f},{5 + i % 450 / 10:.2f},"
            f'{i % 31 / 4:.2f},{i % 4 + 1},"Zone {i % 263}, borough {i % 5}"\n'
        ),
        HEADER,
    )


def generate_json(path: Path, size: int) -> int:
    """Write the CSV's trips as JSON lines of about ``size`` bytes; return the rows written."""
    return _write_trips(
        path,
        size,
        lambda i: (
            f'{{"vendor_id":{i % 2 + 1},"passenger_count":{i % 6 + 1},'
            f'"trip_distance":{i % 97 / 10:.2f},"fare_amount":{5 + i % 450 / 10:.2f},'
            f'"tip_amount":{i % 31 / 4:.2f},"payment_type":{i % 4 + 1},'
            f'"zone":"Zone {i % 263}, borough {i % 5}"}}\n'
        ),
    )


def _write_trips(path: Path, size: int, line: Callable[[int], str], header: str = "") -> int:
    """Write ``header`` then ``line(i)`` for i = 0, 1, ... until ``size`` bytes; return the rows."""
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(header)
        written = len(header)
        while written < size:
            block = "".join(line(i) for i in range(rows, rows + 10_000))
            out.write(block)
            written += len(block)
            rows += 10_000
    return rows


class FileS3:
    """``get_object`` with ``Range`` over a local file: the ranged GETs of S3, without a server."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._size = path.stat().st_size
        self.gets = 0

    def get_object(self, Bucket: str, Key: str, Range: str, IfMatch: str | None = None) -> Any:
        """Answer one ranged GET as S3 does (ContentRange, ETag)."""
        self.gets += 1
        suffix = re.fullmatch(r"bytes=-(\d+)", Range)  # the Parquet footer's GET
        if suffix:
            first, last = max(0, self._size - int(suffix.group(1))), self._size - 1
        else:
            first, last = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", Range).groups())
        self._file.seek(first)
        part = self._file.read(last + 1 - first)  # the one copy a socket's read makes too
        return {
            "Body": _Sent(part),
            "ContentRange": f"bytes {first}-{first + len(part) - 1}/{self._size}",
            "ETag": '"bench"',
        }


class _Sent:
    """A GET's body, already read: ``read()`` hands over the bytes without another copy."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes of the rest (all of it, uncopied, by default)."""
        if 0 <= size < len(self._data):
            data, self._data = self._data[:size], self._data[size:]
        else:
            data, self._data = self._data, b""
        return data


# Set by --warm for the children: how many times each query runs untimed first, in the process.
WARM_VARIABLE = "BENCH_QUERY_WARM"


def child(contender: str, sql: str, path: Path) -> None:
    """Run one query with one contender and print what it cost (in the child process).

    With ``--warm`` the timed run is the second: what a worker pays for every item after its
    first (the first run pays one-off costs too: the C allocator's mmap threshold growing, a
    kernel's first use). With ``--warm 2`` it is the third. The engine freezes the imports'
    objects out of the garbage collector's full passes at its first query, as in a worker
    (:mod:`worker.long_lived`), so the second run no longer pays such a pass (17-24 ms).
    """
    for _ in range(1 + int(os.environ.get(WARM_VARIABLE, "0"))):
        if contender.startswith("duckdb"):
            import duckdb

            run = _duckdb_run(duckdb, sql, path)
        else:
            run = _local_run(contender, sql, path)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    run["peak_rss_mib"] = round(cpu.ru_maxrss / 1024, 1)
    print(json.dumps(run))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _local_run(contender: str, sql: str, path: Path) -> dict[str, Any]:
    from worker.messages import InputFormat
    from worker.query import Deadline, QueryRequest, local, run_query
    from worker.query.local.fastplan import refusal
    from worker.query.local.sql import compile_query

    fmt = InputFormat(compression="GZIP") if path.suffix == ".gz" else InputFormat()
    fmt = InputFormat(kind="PARQUET") if path.suffix == ".parquet" else fmt
    if ".jsonl" in path.suffixes:
        fmt = InputFormat(kind="JSON", compression=fmt.compression)
    local.FAST_PATH = contender != "evaluator"
    if fmt.kind == "PARQUET":
        import worker.query.local.parquet  # once per worker process, not per query
    elif local.FAST_PATH and refusal(compile_query(sql), fmt) is None:
        import worker.query.local.fast_json  # noqa: F401 - once per process (with .fast)
    deadlines: list[Deadline] = []

    class CountingDeadline(Deadline):  # the records read, as the engine counts them
        def __init__(self, at: float | None) -> None:
            super().__init__(at)
            deadlines.append(self)

    local.Deadline = CountingDeadline
    started, cpu = time.monotonic(), _cpu_seconds()
    s3 = FileS3(path)
    result = run_query(s3, QueryRequest("b", "k", sql, fmt), "local")
    records = output_bytes = 0
    for chunk in result.chunks():
        records += chunk.count("\n")
        output_bytes += len(chunk)
    return {
        "seconds": time.monotonic() - started,
        "cpu_seconds": _cpu_seconds() - cpu,
        "records": records,
        "output_bytes": output_bytes,
        "rows_read": sum(d.records for d in deadlines),
        "bytes_fetched": result.bytes_scanned,
        "gets": s3.gets,
    }


def _duckdb_run(duckdb: Any, sql: str, path: Path) -> dict[str, Any]:
    """The same query in DuckDB's SQL, on one thread, every field read as text (as S3 Select)."""
    connection = duckdb.connect()
    connection.execute("SET threads = 1")
    table = (
        f"read_parquet('{path}')"
        if path.suffix == ".parquet"
        else f"read_json('{path}', format = 'newline_delimited')"
        if ".jsonl" in path.suffixes
        else f"read_csv('{path}', header = true, all_varchar = true)"
    )
    duck_sql = (
        sql.replace("FROM S3Object s", f"FROM {table}")
        .replace("s.", "")
        .replace("AS FLOAT", "AS DOUBLE")
        .replace("AS INT", "AS INTEGER")
    )
    started, cpu = time.monotonic(), _cpu_seconds()
    if "COUNT" in sql or "SUM" in sql or "MAX" in sql:
        records = len(connection.execute(duck_sql).fetchall())
    else:  # serialised as JSON lines, as the engines' output is, and thrown away
        # Into the temporary directory: DuckDB locks its target, and /dev/null is shared.
        target = path.with_suffix(".out.json")
        connection.execute(f"COPY ({duck_sql}) TO '{target}' (FORMAT json)")
        target.unlink()
        records = int(re.search(r"LIMIT (\d+)", sql).group(1)) if "LIMIT" in sql else -1
    return {
        "seconds": time.monotonic() - started,
        "cpu_seconds": _cpu_seconds() - cpu,
        "records": records,
    }


# Set by --repeat: how many times each contender runs each query, in turns (A B A B ...).
REPEAT = 1


def contest(contenders: tuple[str, ...], sql: str, path: Path) -> dict[str, dict[str, Any]]:
    """Run ``sql`` with each contender REPEAT times in turns; keep each one's median run.

    Each run is a fresh process, and the same process's speed moves by up to a third from one
    start to the next on a shared machine: the turns put each pair under the same conditions,
    and ``cpu_seconds_runs`` keeps every run for the ratios' spread.
    """
    runs: dict[str, list[dict[str, Any]]] = {contender: [] for contender in contenders}
    for _ in range(REPEAT):
        for contender in contenders:
            runs[contender].append(run_child(contender, sql, path))
    kept = {}
    for contender, made in runs.items():
        median = sorted(made, key=lambda run: run["cpu_seconds"])[len(made) // 2]
        kept[contender] = {**median, "cpu_seconds_runs": [run["cpu_seconds"] for run in made]}
    return kept


def run_child(contender: str, sql: str, path: Path) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter so that its peak RSS is its own."""
    command = [sys.executable, __file__, "--child", contender, sql, str(path)]
    # The worker image holds no numpy; this venv does, pyarrow imports it, and OpenBLAS's idle
    # threads would spin on the process's clock (~7% of a warm WHERE + SUM's CPU time).
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{contender} on {sql!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--inputs",
        default="csv,gzip,parquet",
        help="which tables to run, comma-separated: csv, gzip, parquet, json (default: the "
        "first three)",
    )
    parser.add_argument(
        "--queries", default="", help="Parquet: run only the queries whose name holds this"
    )
    parser.add_argument(
        "--warm",
        nargs="?",
        type=int,
        const=1,
        default=0,
        metavar="N",
        help="run each query N times (1 if not given) untimed first in its process, then time "
        "it: every item after a worker's first",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each query per contender, in turns; the median is shown, and the spread "
        "of the local engine's share of DuckDB over the pairs",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("CONTENDER", "SQL", "PATH"), help=argparse.SUPPRESS
    )
    parser.add_argument("--parquet-to", nargs=2, metavar=("PATH", "MIB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parquet_to:
        print(generate_parquet(Path(args.parquet_to[0]), int(args.parquet_to[1]) << 20))
        return
    if args.child:
        contender, sql, path = args.child
        child(contender, sql, Path(path))
        return
    if args.warm:
        os.environ[WARM_VARIABLE] = str(args.warm)  # the children inherit it
    global REPEAT
    REPEAT = max(1, args.repeat)
    inputs = set(args.inputs.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        if inputs & {"csv", "gzip"}:
            bench_csv(Path(tmp), args.size_mib, inputs)
        if "parquet" in inputs:
            bench_parquet(Path(tmp), args.size_mib, args.queries)
        if "json" in inputs:
            bench_json(Path(tmp), args.size_mib)


def bench_csv(tmp: Path, size_mib: int, inputs: set[str]) -> None:
    """The CSV table (evaluator, fast path, DuckDB), then the same CSV gzipped."""
    data = tmp / "taxi.csv"
    started = time.monotonic()
    rows = generate(data, size_mib << 20)
    size = data.stat().st_size
    print(f"generated {size / 2**20:.0f} MiB, {rows} rows in {time.monotonic() - started:.0f} s")
    if "csv" in inputs:
        results = {name: contest(CONTENDERS, sql, data) for name, sql in QUERIES.items()}
        report(results, size, rows)
    if "gzip" in inputs:
        gzipped = tmp / "taxi.csv.gz"
        with data.open("rb") as plain, gzip.open(gzipped, "wb", compresslevel=6) as packed:
            shutil.copyfileobj(plain, packed, 1 << 20)
        results = {
            name: contest(GZIP_CONTENDERS, sql, gzipped)
            for name, sql in QUERIES.items()
            if "LIMIT" not in name
        }
        packed = gzipped.stat().st_size / 2**20
        title = f"{size / 2**20:.0f} MiB CSV as {packed:.0f} MiB of GZIP; MB/s of the CSV"
        report_table(title, results, size, object_size=gzipped.stat().st_size)


def bench_json(tmp: Path, size_mib: int) -> None:
    """JSON lines, plain (evaluator, fast path, DuckDB) and gzipped (fast path, DuckDB)."""
    data = tmp / "taxi.jsonl"
    rows = generate_json(data, size_mib << 20)
    size = data.stat().st_size
    gzipped = tmp / "taxi.jsonl.gz"
    with data.open("rb") as plain, gzip.open(gzipped, "wb", compresslevel=6) as packed:
        shutil.copyfileobj(plain, packed, 1 << 20)
    for path, contenders, title in [
        (data, CONTENDERS, f"{size / 2**20:.0f} MiB of JSON lines, {rows} rows"),
        (
            gzipped,
            GZIP_CONTENDERS,
            f"the JSON lines as {gzipped.stat().st_size / 2**20:.0f} MiB of GZIP; MB/s of the JSON",
        ),
    ]:
        results = {name: contest(contenders, sql, path) for name, sql in JSON_QUERIES.items()}
        report_table(title, results, size, object_size=path.stat().st_size)


def bench_parquet(tmp: Path, size_mib: int, only: str = "") -> None:
    """The Parquet table: the local engine and DuckDB, with the GETs and bytes read."""
    data = tmp / "wide.parquet"
    # In a child: a parent's peak RSS would be its children's too (ru_maxrss survives exec).
    command = [sys.executable, __file__, "--parquet-to", str(data), str(size_mib)]
    rows = int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    size = data.stat().st_size
    queries = parquet_queries(rows)
    results = {
        name: contest(PARQUET_CONTENDERS, sql, data)
        for name, sql in queries.items()
        if only in name
    }
    title = f"{size / 2**20:.0f} MiB Parquet, {rows} rows, 20 columns; MB/s of the object"
    report_table(title, results, size)


def report_table(
    title: str,
    results: dict[str, dict[str, dict[str, Any]]],
    size: int,
    object_size: int | None = None,
) -> None:
    """Print MB/s per vCPU of ``size`` bytes, each local run's share of one-thread DuckDB's
    rate, its GETs and the share of the object (``object_size``, else ``size``) it fetched,
    and peak RSS; then the figures as one JSON line."""
    print(f"\n{title}")
    print(
        f"{'query':<21}{'contender':<16}{'MB/s/vCPU':>10}{'of DuckDB':>10}{'RSS MiB':>9}"
        f"{'GETs':>6}{'read':>8}"
    )
    for name, runs in results.items():
        for run in runs.values():
            run["mb_per_cpu_second"] = round(size / 1e6 / max(run["cpu_seconds"], 1e-3), 1)
        duckdb = next(run for contender, run in runs.items() if contender.startswith("duckdb"))
        for contender, run in runs.items():
            rate = run["mb_per_cpu_second"]
            shares = sorted(  # pair by pair: DuckDB's CPU seconds over the local engine's
                theirs / max(ours, 1e-3)
                for ours, theirs in zip(
                    run["cpu_seconds_runs"], duckdb["cpu_seconds_runs"], strict=True
                )
            )
            share = shares[len(shares) // 2] if run is not duckdb else None
            spread = f" {shares[0]:.0%}-{shares[-1]:.0%}" if share and len(shares) > 1 else ""
            fetched = run.get("bytes_fetched")
            print(
                f"{name:<21}{contender:<16}{rate:>10.1f}"
                f"{f'{share:.0%}' if share else '-':>10}{run['peak_rss_mib']:>9.1f}"
                f"{run.get('gets', '-')!s:>6}"
                f"{f'{fetched / (object_size or size):.1%}' if fetched else '-':>8}{spread}"
            )
    print(json.dumps({"title": title, "bytes": size, "results": results}))


def report(results: dict[str, dict[str, dict[str, Any]]], size: int, rows: int) -> None:
    """Print the table, the goals of issue 14 against it, and the figures as one JSON line."""
    print(f"\n{size / 2**20:.0f} MiB CSV, {rows} rows; MB/s per vCPU = MB / CPU seconds")
    print(
        f"{'query':<22}{'contender':<11}{'MB/s/vCPU':>10}{'wall s':>8}{'RSS MiB':>9}{'records':>10}"
    )
    for name, runs in results.items():
        for contender, run in runs.items():
            # LIMIT reads a prefix: its rate is of the bytes fetched (DuckDB's are not known).
            scanned = run.get("bytes_fetched") if "LIMIT" in name else size
            rate = scanned / 1e6 / max(run["cpu_seconds"], 1e-3) if scanned else None
            run["mb_per_cpu_second"] = rate and round(rate, 1)
            shown = f"{rate:.1f}" if rate else "-"
            print(
                f"{name:<22}{contender:<11}{shown:>10}"
                f"{run['seconds']:>8.2f}{run['peak_rss_mib']:>9.1f}{run['records']:>10}"
            )
    for name in ("COUNT(*)", "WHERE + SUM"):
        ratio = (
            results[name]["fast path"]["mb_per_cpu_second"]
            / results[name]["duckdb"]["mb_per_cpu_second"]
        )
        print(f"{name}: fast path at {ratio:.0%} of one-thread DuckDB (goal: at least 50%)")
    mean_row = size / rows
    for contender in ("evaluator", "fast path"):
        limited = results[f"SELECT * LIMIT {LIMIT_ROWS}"][contender]
        print(
            f"LIMIT {LIMIT_ROWS}, {contender}: read {limited['rows_read']} rows "
            f"({limited['rows_read'] / LIMIT_ROWS:.2f}x the rows needed; goal: at most 2x), "
            f"fetched {limited['bytes_fetched'] / 2**20:.2f} MiB for "
            f"{LIMIT_ROWS * mean_row / 2**20:.2f} MiB of rows"
        )
        peak = max(run[contender]["peak_rss_mib"] for run in results.values())
        print(f"peak RSS, {contender}: {peak:.1f} MiB (budget {BUDGETS_MIB[contender]} MiB)")
    print(json.dumps({"object_bytes": size, "rows": rows, "results": results}))


if __name__ == "__main__":
    main()
