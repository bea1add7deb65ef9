"""``invoke bench``: the BatchSpot worker against the seed-style loop, and seeding at scale.

Same emulator, same sources, same custom code, same query engine, same number of processes,
one contender after the other on a freshly seeded queue. For each: items/s (from launch to
the last item stored, so idle-exit time is not counted), AWS calls per item (counted through
botocore's event hooks in every process) and the peak RSS of the largest process (``VmHWM``).
Seeding: ``batchspot.seed`` over N listed objects, in calls per object and seconds.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batchspot import seed
from batchspot.emulators import Emulator, emulator_at
from batchspot.fleet import Fleet, worker_env
from batchspot_support import sample_code
from batchspot_support.chaos.stack import clients
from bench import worker_memory
from bench.latency import delayed
from worker.metrics import CallCounter

ROOT = Path(__file__).resolve().parent.parent

CONTENDERS = {
    "seed-style loop": (sys.executable, "-m", "bench.seed_loop"),
    "batchspot worker": (sys.executable, "-m", "worker"),
}
SOURCES = "src/"
QUERY_ENGINE = "local"  # LocalStack has no S3 Select; both contenders read the same way


@dataclass
class RunFigures:
    """One contender's run."""

    name: str
    processes: int
    items: int
    seconds: float
    items_per_second: float
    aws_calls: int
    calls_per_item: float
    calls: dict[str, int]
    peak_rss_mib: float


@dataclass
class SeedFigures:
    """One seeding of N listed objects."""

    objects: int
    upload_seconds: float
    seed_seconds: float
    messages_per_second: float
    aws_calls: int
    calls_per_object: float
    calls: dict[str, int]


def make_queue(sqs: Any, name: str) -> str:
    """A queue without a DLQ: nothing fails in a benchmark, and a failure must not hide."""
    return sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]


def run_contender(
    name: str, emulator: Emulator, bucket: str, processes: int, log_dir: Path
) -> RunFigures:
    """Seed a fresh queue with every source, drain it with ``processes`` processes, measure.

    Results go under ``<log dir name>/<contender>/`` in the input bucket, so no run finds
    another's results already stored.
    """
    s3, sqs = clients(emulator)
    slug = name.replace(" ", "-")
    queue_url = make_queue(sqs, f"bench-{slug}-{time.time_ns()}")
    seeded = seed.seed(s3, sqs, queue_url=queue_url, bucket=bucket, prefix=SOURCES)
    env = worker_env(
        emulator.client_env(),
        queue_url,
        bucket,
        HANDLER=sample_code.HANDLER,
        OUTPUT_PREFIX=f"{log_dir.name}/{slug}/",
        QUERY_ENGINE=QUERY_ENGINE,
        IDLE_EXIT_SECONDS="2",
    )
    fleet = Fleet(env, log_dir / slug, command=CONTENDERS[name])
    fleet.log_dir.mkdir(parents=True, exist_ok=True)
    launched = time.time()
    for slot in range(processes):
        fleet.start(slot)
    try:
        if not fleet.wait(timeout=1800):
            raise RuntimeError(f"{name} did not finish within 30 minutes")
    finally:
        fleet.kill_all()
    summaries = [event for _, event in fleet.events("summary")]
    items = sum(s["ok"] for s in summaries)
    if items != seeded.sent:
        raise RuntimeError(f"{name} stored {items} of {seeded.sent} items; see {fleet.log_dir}")
    finished = max(_last_item_ts(fleet, summaries))
    calls: Counter[str] = Counter()
    for summary in summaries:
        calls.update(summary["calls"])
    total = sum(calls.values())
    seconds = finished - launched
    return RunFigures(
        name=name,
        processes=processes,
        items=items,
        seconds=round(seconds, 2),
        items_per_second=round(items / seconds, 1),
        aws_calls=total,
        calls_per_item=round(total / items, 3),
        calls=dict(sorted(calls.items())),
        peak_rss_mib=round(max(c.peak_rss_kib or 0 for c in fleet.children) / 1024, 1),
    )


def _last_item_ts(fleet: Fleet, summaries: list[dict[str, Any]]) -> list[float]:
    """When each process stored its last item (the loop says so; the worker logs each)."""
    stamps = [s["last_item_ts"] for s in summaries if s.get("last_item_ts")]
    stamps += [event["ts"] for _, event in fleet.events("item")]
    return stamps


def measure_seeding(emulator: Emulator, objects: int) -> SeedFigures:
    """Upload ``objects`` sources, then time and count ``batchspot.seed`` over them."""
    s3, sqs = clients(emulator)
    bucket = f"bench-seed-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    started = time.monotonic()
    sample_code.upload_sources(s3, bucket, objects, seed_value=1, prefix="")
    uploaded = time.monotonic()
    queue_url = make_queue(sqs, f"bench-seed-{time.time_ns()}")
    counter = CallCounter()
    counter.attach(s3)
    counter.attach(sqs)
    report = seed.seed(s3, sqs, queue_url=queue_url, bucket=bucket)
    seconds = time.monotonic() - uploaded
    if report.sent != objects or report.failures:
        raise RuntimeError(f"seeding sent {report.sent} of {objects}: {report.failures[:3]}")
    calls = counter.snapshot()
    return SeedFigures(
        objects=objects,
        upload_seconds=round(uploaded - started, 1),
        seed_seconds=round(seconds, 1),
        messages_per_second=round(objects / seconds),
        aws_calls=sum(calls.values()),
        calls_per_object=round(sum(calls.values()) / objects, 4),
        calls=dict(sorted(calls.items())),
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        memory_kib = int(info.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 1024**2, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def compare(
    emulator: Emulator, bucket: str, processes: int, latency_ms: float, log_dir: Path
) -> dict[str, Any]:
    """Run both contenders through a proxy adding ``latency_ms`` to every AWS call."""
    with delayed(emulator.endpoint, latency_ms) as endpoint:
        proxied = Emulator(emulator.name, endpoint)
        loop, worker = (
            run_contender(name, proxied, bucket, processes, log_dir / f"{latency_ms:g}ms")
            for name in CONTENDERS
        )
    return {
        "latency_ms": latency_ms,
        "runs": [asdict(loop), asdict(worker)],
        "speedup": round(worker.items_per_second / loop.items_per_second, 2),
    }


def run(
    items: int,
    processes: int,
    latencies_ms: tuple[float, ...],
    seed_objects: int,
    large_mib: int,
    log_dir: Path,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Run every measurement on one emulator; return the figures (the JSON written to disk)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with emulator_at(endpoint, log_dir, "localstack") as emulator:
        s3, _ = clients(emulator)
        bucket = f"bench-in-{time.time_ns()}"
        s3.create_bucket(Bucket=bucket)
        sample_code.upload_sources(s3, bucket, items, seed_value=1, prefix=SOURCES)
        comparisons = [
            compare(emulator, bucket, processes, latency, log_dir) for latency in latencies_ms
        ]
        seeding = measure_seeding(emulator, seed_objects) if seed_objects else None
        large = worker_memory.measure(emulator, large_mib, log_dir / "large") if large_mib else None
    return {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "emulator": "LocalStack (native)" if endpoint is None else endpoint,
        "query_engine": QUERY_ENGINE,
        "comparisons": comparisons,
        "seeding": asdict(seeding) if seeding else None,
        "worker_on_large_source": large,
    }


def table(figures: dict[str, Any]) -> str:
    """Return the figures as a Markdown table, as pasted into docs/proof.md."""
    lines = [
        "| added latency per call | contender | processes | items | seconds | items/s "
        "| speedup | AWS calls/item | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for comparison in figures["comparisons"]:
        for r in comparison["runs"]:
            speedup = comparison["speedup"] if r["name"] == "batchspot worker" else 1
            lines.append(
                f"| {comparison['latency_ms']:g} ms | {r['name']} | {r['processes']} | "
                f"{r['items']} | {r['seconds']} | {r['items_per_second']} | {speedup}x | "
                f"{r['calls_per_item']} | {r['peak_rss_mib']} |"
            )
    if seeding := figures["seeding"]:
        lines.append(
            f"\nseeding {seeding['objects']} objects: {seeding['seed_seconds']} s "
            f"({seeding['messages_per_second']} messages/s), "
            f"{seeding['calls_per_object']} AWS calls per object {seeding['calls']}"
        )
    if large := figures["worker_on_large_source"]:
        lines.append(
            f"worker on a {large['object_bytes'] / 2**20:.0f} MiB CSV "
            f"(LIMIT {large['query_limit']}): "
            f"peak RSS {large['peak_rss_mib']} MiB (budget {large['budget_mib']} MiB), "
            f"item {large['item_ms']} ms"
        )
    return "\n".join(lines)


def run_and_record(
    items: int,
    processes: int,
    latencies_ms: tuple[float, ...],
    seed_objects: int,
    large_mib: int,
    out: Path,
    endpoint: str | None = None,
) -> str:
    """Run every benchmark, the query engine's too; write ``figures.json``; return the table."""
    figures = run(items, processes, latencies_ms, seed_objects, large_mib, out / "logs", endpoint)
    report = []
    if large_mib:
        command = [sys.executable, "bench/query_engine.py", "--size-mib", str(large_mib)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        report.append(done.stdout.rsplit("\n{", 1)[0])  # its own table, then one JSON line
        figures["query_engine"] = json.loads(done.stdout.strip().splitlines()[-1])
    (out / "figures.json").write_text(json.dumps(figures, indent=2))
    report += [table(figures), f"figures: {out / 'figures.json'}"]
    return "\n".join(report)
