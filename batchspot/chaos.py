"""``invoke chaos``: drain a queue while workers are killed at random, then prove nothing broke.

Spot's promise is only as good as the worst moment a host can vanish, so the driver picks that
moment at random, many times: every few seconds it SIGKILLs (host gone) or SIGTERMs (Batch or
ECS draining the host) a random worker and starts a new one in its slot, as Batch retries a
reclaimed array child. When the queue is empty it checks what a user would:

* no item lost: every good source has its result;
* no duplicate: each result was written once, counted as object *versions* (the output bucket is
  versioned, so an overwrite could not hide) and as ``ok`` log lines, killed workers included;
* every result equals what the custom code returns for its source;
* the queue is empty, and the dead-letter queue holds exactly the poison seeded on purpose;
* every worker SIGTERMed after its start exited 0.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.config import Config

from batchspot import sample_code, seed
from batchspot.aws import create_queue_with_dlq, queue_counts
from batchspot.emulators import Emulator, localstack_server
from batchspot.fleet import Fleet, worker_env
from worker.keys import derive_output_key

OUTPUT_PREFIX = "results/"


@dataclass(frozen=True)
class ChaosSettings:
    """One chaos run; the defaults are the issue's acceptance run."""

    items: int = 1000
    workers: int = 4
    interval: float = 2.0  # mean seconds between blows; each gap is 0.5x to 1.5x this
    seed: int = 1
    work_ms: int = 200  # the custom code's time per item, so blows land while items run
    visibility_timeout: int = 8  # how long a SIGKILLed worker's messages stay hidden
    max_receive_count: int = 6  # high enough that no good item is dead-lettered by bad luck
    timeout: float = 900.0


@dataclass
class ChaosReport:
    """What happened and what was found; ``failures`` empty means the run passed."""

    settings: ChaosSettings
    emulator: str
    seconds: float = 0.0
    blows: Counter[str] = field(default_factory=Counter)
    blows_with_work_queued: int = 0
    starts: int = 0
    good: int = 0
    poison: int = 0
    stored: int = 0
    lost: int = 0
    versions: int = 0
    logged_ok: int = 0
    logged_already_done: int = 0
    wrong: int = 0
    queue_end: tuple[int, int] = (0, 0)
    dead_lettered: int = 0
    sigterm_before_start: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check held."""
        return not self.failures

    @property
    def duplicates(self) -> int:
        """Writes beyond the first per result: extra versions or extra ``ok`` lines."""
        return max(self.versions - self.stored, self.logged_ok - self.good, 0)

    def render(self) -> str:
        """Return the report as ``invoke chaos`` prints it."""
        s = self.settings
        rows = [
            ("emulator", self.emulator),
            ("items (good + poison)", f"{self.good} + {self.poison}"),
            ("worker slots", s.workers),
            ("blows", f"{self.blows['SIGKILL']} SIGKILL, {self.blows['SIGTERM']} SIGTERM"),
            ("blows while items were still queued", self.blows_with_work_queued),
            ("custom code time per item", f"{s.work_ms} ms"),
            ("worker processes started", self.starts),
            ("SIGTERMs before the worker's handler (held nothing)", self.sigterm_before_start),
            ("seconds", f"{self.seconds:.1f}"),
            ("items lost", self.lost),
            ("duplicate outputs", self.duplicates),
            ("writes that reached S3 (object versions)", self.versions),
            ("ok log lines (killed workers included)", self.logged_ok),
            ("already-done (redelivered, not rewritten)", self.logged_already_done),
            ("outputs not equal to the custom code's result", self.wrong),
            ("queue visible / in flight at the end", "{} / {}".format(*self.queue_end)),
            ("dead-letter queue", f"{self.dead_lettered} (poison seeded: {self.poison})"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        return "\n".join([*lines, verdict])


@dataclass(frozen=True)
class _Stack:
    queue_url: str
    dlq_url: str
    input_bucket: str
    output_bucket: str


def clients(emulator: Emulator) -> tuple[Any, Any]:
    """S3 and SQS clients on the emulator, with its test credentials (never ~/.aws)."""
    config = Config(max_pool_connections=16)
    return emulator.client("s3", config), emulator.client("sqs", config)


@contextlib.contextmanager
def emulator_at(endpoint: str | None, log_dir: Path) -> Iterator[Emulator]:
    """Use the emulator at ``endpoint``, or run LocalStack natively for the block."""
    if endpoint:
        yield Emulator(endpoint.rstrip("/"), endpoint.rstrip("/"))
        return
    with localstack_server(log_dir) as started:
        yield started


def create_stack(s3: Any, sqs: Any, settings: ChaosSettings) -> _Stack:
    """Create a queue with its DLQ, an input bucket and a *versioned* output bucket."""
    suffix = uuid.uuid4().hex[:10]
    queue_url, dlq_url = create_queue_with_dlq(
        sqs, f"chaos-{suffix}", settings.visibility_timeout, settings.max_receive_count
    )
    stack = _Stack(queue_url, dlq_url, f"chaos-in-{suffix}", f"chaos-out-{suffix}")
    s3.create_bucket(Bucket=stack.input_bucket)
    s3.create_bucket(Bucket=stack.output_bucket)
    s3.put_bucket_versioning(
        Bucket=stack.output_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    return stack


def upload_sources(
    s3: Any, bucket: str, count: int, seed_value: int, prefix: str = "good/"
) -> dict[str, list[tuple[str, str]]]:
    """Upload ``count`` small CSV sources; return each key's rows (the truth to check by)."""
    # No spaces or '+' in these keys: LocalStack 4.13 breaks listing pagination on them.
    sources = {
        f"{prefix}part-{index:06d}.csv": sample_code.source_rows(index, seed_value)
        for index in range(count)
    }

    def put(key: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=sample_code.source_csv(sources[key]))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, sources))
    return sources


def seed_poison(s3: Any, sqs: Any, stack: _Stack) -> list[str]:
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
    sent, failed = seed.send_batch(sqs, stack.queue_url, bodies)
    if failed or sent != len(bodies):
        raise RuntimeError(f"could not queue the poison items: {failed}")
    return bodies


def queue_depths(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) on a queue."""
    counts = queue_counts(sqs, queue_url)
    return counts.visible, counts.in_flight


def storm(
    fleet: Fleet, sqs: Any, stack: _Stack, settings: ChaosSettings, report: ChaosReport
) -> None:
    """Keep every slot filled and strike a random worker every few seconds until drained."""
    rng = random.Random(settings.seed)
    for slot in range(settings.workers):
        fleet.start(slot)
    deadline = time.monotonic() + settings.timeout
    next_blow = time.monotonic() + settings.interval * rng.uniform(0.5, 1.5)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        running = fleet.running()
        visible, in_flight = queue_depths(sqs, stack.queue_url)
        if (visible, in_flight) == (0, 0):
            return
        for slot in set(range(settings.workers)) - {c.slot for c in running}:
            fleet.start(slot)  # a retried child, or one that idled out too early
        targets = [c for c in running if c.signalled is None]
        if time.monotonic() >= next_blow and targets:
            victim = rng.choice(targets)
            blow = rng.choice((signal.SIGKILL, signal.SIGTERM))
            fleet.signal(victim, blow)
            report.blows[blow.name] += 1
            report.blows_with_work_queued += visible > 0
            next_blow = time.monotonic() + settings.interval * rng.uniform(0.5, 1.5)
    raise TimeoutError(f"the queue was not drained within {settings.timeout:.0f} s")


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
    while messages := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=0
    ).get("Messages", []):
        bodies.extend(m["Body"] for m in messages)
    return bodies


def verify(
    report: ChaosReport,
    s3: Any,
    sqs: Any,
    stack: _Stack,
    expected: dict[str, dict[str, Any]],
    poison: list[str],
    fleet: Fleet,
) -> list[str]:
    """Run every check; record the figures and return a sentence for each failed check."""
    versions = stored_versions(s3, stack.output_bucket)
    report.stored = len(versions)
    report.versions = sum(len(v) for v in versions.values())
    report.lost = len(set(expected) - set(versions))
    unexpected = set(versions) - set(expected)
    for key, ids in versions.items():
        for version_id in ids:
            body = s3.get_object(Bucket=stack.output_bucket, Key=key, VersionId=version_id)
            try:
                result = json.loads(body["Body"].read())
            except ValueError:
                result = None
            report.wrong += result != expected.get(key)
    outcomes = Counter(event["outcome"] for _, event in fleet.events("item"))
    report.logged_ok, report.logged_already_done = outcomes["ok"], outcomes["already-done"]
    report.queue_end = queue_depths(sqs, stack.queue_url)
    dead = received_bodies(sqs, stack.dlq_url)
    report.dead_lettered = len(dead)
    # A SIGTERM that lands before the worker has installed its handler (while Python imports
    # boto3) ends the process by the signal; it held no message yet, so that is harmless.
    started = {id(child) for child, _ in fleet.events("start")}
    terminated = [c for c in fleet.children if c.signalled == "SIGTERM"]
    report.sigterm_before_start = sum(id(c) not in started for c in terminated)
    bad_exits = [c for c in terminated if id(c) in started and c.exit_code != 0]
    checks = [
        (report.lost == 0, f"{report.lost} items lost"),
        (not unexpected, f"{len(unexpected)} outputs at keys no source maps to"),
        (report.duplicates == 0, f"{report.duplicates} duplicate writes"),
        (report.wrong == 0, f"{report.wrong} outputs differ from the custom code's result"),
        (report.queue_end == (0, 0), f"queue not empty at the end: {report.queue_end}"),
        (Counter(dead) == Counter(poison), "the dead-letter queue is not exactly the poison"),
        (not bad_exits, f"{len(bad_exits)} workers exited non-zero after SIGTERM"),
    ]
    return [sentence for held, sentence in checks if not held]


def run_chaos(settings: ChaosSettings, log_dir: Path, endpoint: str | None = None) -> ChaosReport:
    """Seed, storm, verify; LocalStack is started natively unless ``endpoint`` is given."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with emulator_at(endpoint, log_dir) as emulator:
        s3, sqs = clients(emulator)
        stack = create_stack(s3, sqs, settings)
        sources = upload_sources(s3, stack.input_bucket, settings.items, settings.seed)
        seeded = seed.seed(
            s3, sqs, queue_url=stack.queue_url, bucket=stack.input_bucket, prefix="good/"
        )
        poison = seed_poison(s3, sqs, stack)
        etags = {s.key: s.etag for s in seed.list_sources(s3, stack.input_bucket, "good/")}
        expected = {
            derive_output_key(OUTPUT_PREFIX, stack.input_bucket, key, etags[key]): (
                sample_code.expected_result(rows)
            )
            for key, rows in sources.items()
        }
        report = ChaosReport(settings, emulator.name, good=seeded.sent, poison=len(poison))
        env = worker_env(
            emulator,
            stack.queue_url,
            stack.output_bucket,
            HANDLER=sample_code.HANDLER,
            OUTPUT_PREFIX=OUTPUT_PREFIX,
            WORKER_CONCURRENCY="4",
            IDLE_EXIT_SECONDS="3",
            STOP_GRACE_SECONDS="2",
            RETRY_DELAY_SECONDS="0",
            **{sample_code.WORK_ENV: str(settings.work_ms)},
        )
        fleet = Fleet(env, log_dir)
        started = time.monotonic()
        try:
            storm(fleet, sqs, stack, settings, report)
            if not fleet.wait(timeout=60):
                report.failures.append("workers did not exit after the queue was drained")
        except TimeoutError as error:
            report.failures.append(str(error))
        finally:
            fleet.kill_all()
        report.seconds = time.monotonic() - started
        report.starts = len(fleet.children)
        report.failures += verify(report, s3, sqs, stack, expected, poison, fleet)
    return report
