"""``invoke chaos``: drain a queue while workers are killed at random, then prove nothing broke.

Spot's promise is only as good as the worst moment a host can vanish, so the driver picks that
moment at random, many times: every few seconds, while the queue still shows visible messages,
it SIGKILLs (host gone) or SIGTERMs (Batch or ECS draining the host) a random worker. A struck
slot gets its next attempt once its child has exited, as Batch retries a reclaimed array child;
a child that left by itself stays gone, as on Batch, so work the fleet would strand shows. The
driver then waits for every worker to leave by itself and checks what a user would:

* no item lost: every good source has its result;
* none stored twice: each result was written once, counted as object *versions* (the output
  bucket is versioned, so an overwrite could not hide) and as ``ok`` log lines, killed workers
  included;
* every result equals what the custom code returns for its source;
* nothing stranded: no message visible, in flight or delayed once every worker has left;
* the dead-letter queue holds exactly the poison seeded on purpose, no healthy item;
* every worker SIGTERMed after its start, and every worker that left by itself, exited 0.

With ``hostile`` a hostile mix (issue 11) is queued next to the poison: sources and queries
built to blow up the local engine (a LIKE and a ``||`` blow-up, a gzip bomb, a 64 MiB CSV line,
a deep DOCUMENT) and two ``output_key`` values the worker must refuse. Each must be settled,
stored or dead-lettered, never lost or stranded, within ITEM_TIMEOUT_SECONDS; the DLQ must then
hold exactly the poison plus the hostile items that failed; the fleet's peak RSS (VmHWM) must
stay within 128 MiB; and nothing may be written outside the results prefix.

With ``aws_rules`` the workers (not the driver, which seeds and checks on the emulator itself)
talk to AWS through the rules layer (``batchspot.awsrules``): S3 answers 403 for missing keys
as the job-role policy Terraform renders implies, and SlowDown, throttling and failed
visibility extensions arrive at the settings' rates.
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
from batchspot.aws import QueueCounts, create_queue_with_dlq, queue_arn, queue_counts
from batchspot.awsrules import Faults, RulesLayer, aws_rules
from batchspot.emulators import Emulator, localstack_server
from batchspot.fleet import Fleet, worker_env
from batchspot.hostile import CASES, QUERY_CASES, message_input
from batchspot.policy import render_worker_policy
from worker.keys import derive_output_key

OUTPUT_PREFIX = "results/"
# Issue 11's memory bound for a worker process, checked on the fleet's peak with ``hostile``.
PEAK_RSS_LIMIT_KIB = 128 * 1024
# The hostile mix: cases of batchspot.hostile (each with its query and input format), chosen
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
# Worker log events worth a look after a run, counted in the report (see worker/loop.py and
# worker/inflight.py): messages lost to another receiver, items finishing after their
# deadline, deletes given up, a sweep ended by its cap rather than by an empty queue, the
# heartbeat turning unhealthy (or healthy again), and the retries that faults cause.
NOTABLE_EVENTS = (
    "lost",
    "heartbeat",
    "late-finish",
    "delete-abandoned",
    "sweep-cap",
    "stuck",
    "item-error",
    "delete-failed",
    "visibility-failed",
    "receive-failed",
    "throttled",
)


@dataclass(frozen=True)
class ChaosSettings:
    """One chaos run; the defaults are the issue's acceptance run."""

    items: int = 1000
    workers: int = 4
    interval: float = 2.0  # mean seconds between blows; each gap is 0.5x to 1.5x this
    seed: int = 1
    work_ms: int = 200  # the custom code's time per item, so blows land while items run
    visibility_timeout: int = 8  # how long a SIGKILLed worker's messages stay hidden
    max_receive_count: int = 6  # every give-back on a stop counts: see the report's margin
    # RETRY_DELAY_SECONDS: a failed item waits this long before its next receive, so the run
    # has messages the workers gave back with a delay, the ones the issue found stranded.
    retry_delay: int = 2
    timeout: float = 900.0  # for the storm, until the queue shows nothing visible
    aws_rules: bool = False
    # Queue the hostile mix too. Its workers run the local engine (the one issue 11 bounds;
    # S3 Select's limits are AWS's) with this ITEM_TIMEOUT_SECONDS, instead of the default of
    # twice HANDLER_TIMEOUT (30 min), so a hostile item that held a worker would show.
    hostile: bool = False
    item_timeout: float = 60.0
    # Fault rates of the rules layer, used only with ``aws_rules``. Modest on purpose: over
    # 1000 items they still inject dozens (about 50 SlowDowns and 15 throttles), so every
    # retry path runs, while a healthy item could only fail if all 10 of botocore's attempts
    # met a fault (0.02**10), or a held message's extension failed on every heartbeat tick
    # (0.5 s) for the half visibility timeout left to it (0.05**8). Visibility entries are
    # mostly give-backs, which are few, so that rate is higher.
    s3_slowdown_rate: float = 0.02
    sqs_throttle_rate: float = 0.02
    visibility_entry_failure_rate: float = 0.05

    @property
    def exit_timeout(self) -> float:
        """How long workers may take to leave by themselves once nothing is visible.

        The sweeper's own cap (worker/loop.py: maxReceiveCount x (visibility timeout +
        RETRY_DELAY_SECONDS)), plus a minute for idle waits, long polls and retried slots.
        """
        return self.max_receive_count * (self.visibility_timeout + self.retry_delay) + 60.0

    def faults(self) -> Faults:
        """Return the rules layer's faults for this run, reproducible from its seed."""
        return Faults(
            s3_slowdown_rate=self.s3_slowdown_rate,
            sqs_throttle_rate=self.sqs_throttle_rate,
            visibility_entry_failure_rate=self.visibility_entry_failure_rate,
            seed=self.seed,
        )


@dataclass
class ChaosReport:
    """What happened and what was found; ``failures`` empty means the run passed."""

    settings: ChaosSettings
    emulator: str
    seconds: float = 0.0  # from the first worker's start to the last one's exit
    wall_seconds: float = 0.0  # the stack, seeding, policy, drain and checks
    blows: Counter[str] = field(default_factory=Counter)
    starts: int = 0
    good: int = 0
    poison: int = 0
    stored: int = 0
    lost: int = 0
    versions: int = 0
    logged_ok: int = 0
    logged_already_done: int = 0
    healthy_failed_attempts: int = 0
    given_back: int = 0
    max_receives: int = 0
    wrong: int = 0
    queue_end: QueueCounts = field(default_factory=lambda: QueueCounts(0, 0, 0))
    dead_lettered: int = 0
    healthy_dead_lettered: int = 0
    poison_not_dead_lettered: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    self_exit_codes: Counter[int] = field(default_factory=Counter)
    notable_events: Counter[str] = field(default_factory=Counter)
    sigterm_before_start: int = 0
    hostile: int = 0
    hostile_stored: int = 0
    hostile_versions: int = 0
    hostile_dead_lettered: int = 0
    hostile_unsettled: int = 0  # neither stored nor dead-lettered, or both
    hostile_without_reason: int = 0  # dead-lettered, but no attempt failed for its reason
    hostile_max_ms: int = 0  # the longest hostile attempt, from its ``item`` log line
    peak_rss_kib: int = 0  # the largest VmHWM any worker reached
    outside_prefix: int = 0  # keys in the output bucket outside OUTPUT_PREFIX (or with '..')
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every check held."""
        return not self.failures

    @property
    def duplicates(self) -> int:
        """Writes beyond the first per result: extra versions or extra ``ok`` lines."""
        healthy = max(self.versions - self.stored, self.logged_ok - self.good, 0)
        return healthy + self.hostile_versions - self.hostile_stored

    @property
    def stranded(self) -> int:
        """Messages left on the work queue after every worker left by itself."""
        return self.queue_end.total

    def render(self) -> str:
        """Return the report as ``invoke chaos`` prints it."""
        s = self.settings
        end = self.queue_end
        layer = (
            f"on: SlowDown {s.s3_slowdown_rate:g}, throttling {s.sqs_throttle_rate:g}, "
            f"failed visibility entries {s.visibility_entry_failure_rate:g}"
            if s.aws_rules
            else "off"
        )
        rows: list[tuple[str, object]] = [
            ("emulator", self.emulator),
            ("AWS rules layer", layer),
            (
                "items (good + poison + hostile)" if s.hostile else "items (good + poison)",
                f"{self.good} + {self.poison}" + (f" + {self.hostile}" if s.hostile else ""),
            ),
            ("worker slots", s.workers),
            ("blows", f"{self.blows['SIGKILL']} SIGKILL, {self.blows['SIGTERM']} SIGTERM"),
            ("custom code time per item", f"{s.work_ms} ms"),
            ("worker processes started", self.starts),
            ("SIGTERMs before the worker's handler (held nothing)", self.sigterm_before_start),
            ("exit codes of workers that left by themselves", _counts(self.self_exit_codes)),
            ("drain seconds (first start to last exit)", f"{self.seconds:.1f}"),
            ("wall seconds (stack, seed, policy, drain, checks)", f"{self.wall_seconds:.1f}"),
            ("items lost", self.lost),
            ("stored twice", self.duplicates),
            ("writes that reached S3 (object versions)", self.versions),
            ("ok log lines (killed workers included)", self.logged_ok),
            ("already-done (redelivered, not rewritten)", self.logged_already_done),
            ("failed attempts of healthy items (retried)", self.healthy_failed_attempts),
            ("messages given back on a stop (each a receive)", self.given_back),
            (
                "most receives a healthy item needed",
                f"{self.max_receives} (maxReceiveCount {s.max_receive_count})",
            ),
            ("outputs not equal to the custom code's result", self.wrong),
            (
                "stranded (visible / in flight / delayed)",
                f"{self.stranded} ({end.visible} / {end.in_flight} / {end.delayed})",
            ),
            ("healthy items dead-lettered", self.healthy_dead_lettered),
            ("dead-letter queue", f"{self.dead_lettered} (poison seeded: {self.poison})"),
            ("worker events of note", _counts(self.notable_events)),
        ]
        if s.hostile:
            rows += self._hostile_rows()
        if s.aws_rules:
            rows.append(("layer's injected answers", _counts(self.injected)))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        return "\n".join([*lines, verdict])

    def _hostile_rows(self) -> list[tuple[str, object]]:
        """Return the figures issue 11 asks of the hostile mix."""
        s = self.settings
        return [
            (
                "hostile items seeded / stored / dead-lettered",
                f"{self.hostile} / {self.hostile_stored} / {self.hostile_dead_lettered}",
            ),
            ("hostile items neither stored nor dead-lettered", self.hostile_unsettled),
            ("hostile items dead-lettered without their reason", self.hostile_without_reason),
            (
                "longest hostile attempt",
                f"{self.hostile_max_ms / 1000:.1f} s (ITEM_TIMEOUT_SECONDS {s.item_timeout:g})",
            ),
            (
                "fleet's peak RSS (VmHWM)",
                f"{self.peak_rss_kib / 1024:.1f} MiB (bound {PEAK_RSS_LIMIT_KIB // 1024} MiB)",
            ),
            ("written outside the results prefix", self.outside_prefix),
        ]


def _counts(counter: Counter[Any]) -> str:
    """``name: n, name: n`` in name order, or ``none``."""
    return ", ".join(f"{name}: {n}" for name, n in sorted(counter.items())) or "none"


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


@dataclass(frozen=True)
class HostileItem:
    """One message of the hostile mix, and where its result would be stored."""

    body: str
    source: str  # its key in the input bucket, under ``hostile/``
    result_key: str
    reason: str  # a fragment of the reason it is dead-lettered with, if it fails


def seed_hostile(s3: Any, sqs: Any, stack: _Stack) -> list[HostileItem]:
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
        result_key = derive_output_key(OUTPUT_PREFIX, stack.input_bucket, key, etag, sql)
        items.append(HostileItem(body, key, result_key, reason))
    for name, output_key in BAD_OUTPUT_KEYS.items():
        key = f"hostile/output-key-{name}.csv"
        s3.put_object(Bucket=stack.input_bucket, Key=key, Body=sample_code.source_csv([]))
        body = json.dumps({"bucket": stack.input_bucket, "key": key, "output_key": output_key})
        items.append(HostileItem(body, key, output_key, "refused output_key"))
    bodies = [item.body for item in items]
    sent, failed = seed.send_batch(sqs, stack.queue_url, bodies)
    if failed or sent != len(bodies):
        raise RuntimeError(f"could not queue the hostile items: {failed}")
    return items


def storm(
    fleet: Fleet, sqs: Any, stack: _Stack, settings: ChaosSettings, report: ChaosReport
) -> None:
    """Strike a random worker every few seconds while the queue still shows visible messages.

    Stops early if no worker runs any more (each left by itself): nothing could take the rest.
    """
    rng = random.Random(settings.seed)
    for slot in range(settings.workers):
        fleet.start(slot)
    deadline = time.monotonic() + settings.timeout
    next_blow = time.monotonic() + settings.interval * rng.uniform(0.5, 1.5)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        fleet.restart_reclaimed()
        running = fleet.running()
        if not running or queue_counts(sqs, stack.queue_url).visible == 0:
            return
        targets = [c for c in running if c.signalled is None]
        if time.monotonic() >= next_blow and targets:
            blow = rng.choice((signal.SIGKILL, signal.SIGTERM))
            fleet.signal(rng.choice(targets), blow)
            report.blows[blow.name] += 1
            next_blow = time.monotonic() + settings.interval * rng.uniform(0.5, 1.5)
    raise TimeoutError(f"the queue still showed visible messages after {settings.timeout:.0f} s")


def wait_for_own_exits(fleet: Fleet, timeout: float) -> bool:
    """Wait until every worker has left by itself, retrying struck slots; False at timeout."""
    deadline = time.monotonic() + timeout
    while fleet.running() or fleet.restart_reclaimed():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def drain(
    fleet: Fleet, sqs: Any, stack: _Stack, settings: ChaosSettings, report: ChaosReport
) -> None:
    """Storm, then let the workers leave by themselves; record the time and any failure."""
    started = time.monotonic()
    try:
        storm(fleet, sqs, stack, settings, report)
        if not wait_for_own_exits(fleet, settings.exit_timeout):
            report.failures.append(
                f"workers still ran {settings.exit_timeout:.0f} s after the storm ended"
            )
    except TimeoutError as error:
        report.failures.append(str(error))
    finally:
        # Before the cleanup's SIGKILLs, which are no worker's own exit.
        report.self_exit_codes = Counter(
            c.exit_code for c in fleet.children if c.signalled is None and c.poll()
        )
        fleet.kill_all()
    report.seconds = time.monotonic() - started
    report.starts = len(fleet.children)


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
    hostile: list[HostileItem] | None = None,
) -> list[str]:
    """Run every check; record the figures and return a sentence for each failed check."""
    hostile = hostile or []
    versions = stored_versions(s3, stack.output_bucket)
    good = {key: ids for key, ids in versions.items() if key in expected}
    report.stored = len(good)
    report.versions = sum(len(v) for v in good.values())
    report.lost = len(set(expected) - set(versions))
    hostile_keys = {item.result_key for item in hostile}
    unexpected = set(versions) - set(expected) - hostile_keys
    report.hostile_stored = len(hostile_keys & set(versions))
    report.hostile_versions = sum(len(versions.get(key, [])) for key in hostile_keys)
    report.outside_prefix = sum(
        not key.startswith(OUTPUT_PREFIX) or ".." in key.split("/") for key in versions
    )
    for key, ids in good.items():
        for version_id in ids:
            body = s3.get_object(Bucket=stack.output_bucket, Key=key, VersionId=version_id)
            try:
                result = json.loads(body["Body"].read())
            except ValueError:
                result = None
            report.wrong += result != expected.get(key)
    read_logs(report, fleet)
    report.queue_end = queue_counts(sqs, stack.queue_url)
    dead = Counter(received_bodies(sqs, stack.dlq_url))
    report.dead_lettered = dead.total()
    hostile_bodies = Counter(item.body for item in hostile)
    report.healthy_dead_lettered = (dead - Counter(poison) - hostile_bodies).total()
    report.poison_not_dead_lettered = (Counter(poison) - dead).total()
    report.hostile_dead_lettered = (dead & hostile_bodies).total()
    report.hostile_unsettled = sum(
        (item.result_key in versions) == (item.body in dead) for item in hostile
    )
    reasons = [
        (event.get("source", ""), event.get("reason") or "")
        for _, event in fleet.events("item")
        if event.get("outcome") == "failed"
    ]
    report.hostile_without_reason = sum(
        item.body in dead
        and not any(
            source.endswith("/" + item.source) and item.reason in reason
            for source, reason in reasons
        )
        for item in hostile
    )
    report.peak_rss_kib = max((c.peak_rss_kib or 0 for c in fleet.children), default=0)
    # A SIGTERM that lands before the worker has installed its handler (while Python starts)
    # ends the process by the signal; it held no message yet, so that is harmless.
    started = {id(child) for child, _ in fleet.events("start")}
    terminated = [c for c in fleet.children if c.signalled == "SIGTERM"]
    report.sigterm_before_start = sum(id(c) not in started for c in terminated)
    bad_exits = [c for c in terminated if id(c) in started and c.exit_code != 0]
    own_bad_exits = report.self_exit_codes.total() - report.self_exit_codes[0]
    checks = [
        (report.lost == 0, f"{report.lost} items lost"),
        (not unexpected, f"{len(unexpected)} outputs at keys no source maps to"),
        (report.duplicates == 0, f"{report.duplicates} items stored twice"),
        (report.wrong == 0, f"{report.wrong} outputs differ from the custom code's result"),
        (report.stranded == 0, f"{report.stranded} messages stranded on the queue"),
        (
            report.healthy_dead_lettered == 0,
            f"{report.healthy_dead_lettered} healthy items dead-lettered",
        ),
        (
            report.poison_not_dead_lettered == 0,
            f"{report.poison_not_dead_lettered} poison items not dead-lettered",
        ),
        (not bad_exits, f"{len(bad_exits)} workers exited non-zero after SIGTERM"),
        (own_bad_exits == 0, f"{own_bad_exits} workers left by themselves with a non-zero code"),
    ]
    if report.settings.hostile:
        checks += _hostile_checks(report)
    return [sentence for held, sentence in checks if not held]


def _hostile_checks(report: ChaosReport) -> list[tuple[bool, str]]:
    """Return issue 11's promises for the hostile mix, as (held, sentence if not) pairs.

    Only with ``hostile``, so runs without it keep their checks.
    """
    limit_ms = report.settings.item_timeout * 1000
    return [
        (
            report.hostile_unsettled == 0,
            f"{report.hostile_unsettled} hostile items neither stored nor dead-lettered (or both)",
        ),
        (
            report.hostile_without_reason == 0,
            f"{report.hostile_without_reason} hostile items dead-lettered without their reason",
        ),
        (
            report.hostile_max_ms <= limit_ms,
            f"a hostile attempt took {report.hostile_max_ms} ms, over ITEM_TIMEOUT_SECONDS",
        ),
        (
            0 < report.peak_rss_kib <= PEAK_RSS_LIMIT_KIB,
            f"peak RSS {report.peak_rss_kib} KiB, over {PEAK_RSS_LIMIT_KIB} KiB (or unread)",
        ),
        (report.outside_prefix == 0, f"{report.outside_prefix} objects outside the prefix"),
    ]


def read_logs(report: ChaosReport, fleet: Fleet) -> None:
    """Record what the workers' logs tell: outcomes, receives, give-backs, events of note.

    Healthy items are told from poison by their ``source``: only good sources are under
    ``good/``. Each ``item`` line carries the message's receive count as ``attempt``.
    """
    items = [event for _, event in fleet.events("item")]
    healthy = [event for event in items if "/good/" in event.get("source", "")]
    report.hostile_max_ms = max(
        (int(e.get("duration_ms", 0)) for e in items if "/hostile/" in e.get("source", "")),
        default=0,
    )
    outcomes = Counter(event["outcome"] for event in healthy)
    report.logged_ok, report.logged_already_done = outcomes["ok"], outcomes["already-done"]
    report.healthy_failed_attempts = outcomes["failed"]
    report.max_receives = max((int(event["attempt"]) for event in healthy), default=0)
    report.given_back = sum(len(event["messages"]) for _, event in fleet.events("released"))
    report.notable_events = Counter(name for name in NOTABLE_EVENTS for _ in fleet.events(name))


@contextlib.contextmanager
def rules_layer(
    settings: ChaosSettings, emulator: Emulator, sqs: Any, stack: _Stack, work_dir: Path
) -> Iterator[RulesLayer | None]:
    """With ``aws_rules``, the rules layer in front of ``emulator`` for the block; else None.

    The layer judges permissions by the job role's policy as Terraform renders it for this
    stack's queue and buckets.
    """
    if not settings.aws_rules:
        yield None
        return
    policy = render_worker_policy(
        queue_arn(sqs, stack.queue_url),
        stack.input_bucket,
        [stack.output_bucket],
        OUTPUT_PREFIX,
        work_dir,
    )
    with aws_rules(emulator.endpoint, policy, settings.faults()) as layer:
        yield layer


def run_chaos(settings: ChaosSettings, log_dir: Path, endpoint: str | None = None) -> ChaosReport:
    """Seed, storm, verify; LocalStack is started natively unless ``endpoint`` is given."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with emulator_at(endpoint, log_dir) as emulator:
        started = time.monotonic()
        s3, sqs = clients(emulator)
        stack = create_stack(s3, sqs, settings)
        sources = upload_sources(s3, stack.input_bucket, settings.items, settings.seed)
        seeded = seed.seed(
            s3, sqs, queue_url=stack.queue_url, bucket=stack.input_bucket, prefix="good/"
        )
        poison = seed_poison(s3, sqs, stack)
        hostile = seed_hostile(s3, sqs, stack) if settings.hostile else []
        etags = {s.key: s.etag for s in seed.list_sources(s3, stack.input_bucket, "good/")}
        expected = {
            derive_output_key(OUTPUT_PREFIX, stack.input_bucket, key, etags[key]): (
                sample_code.expected_result(rows)
            )
            for key, rows in sources.items()
        }
        report = ChaosReport(
            settings, emulator.name, good=seeded.sent, poison=len(poison), hostile=len(hostile)
        )
        hostile_env = (
            {"QUERY_ENGINE": "local", "ITEM_TIMEOUT_SECONDS": f"{settings.item_timeout:g}"}
            if settings.hostile
            else {}
        )
        with rules_layer(settings, emulator, sqs, stack, log_dir / "policy") as layer:
            env = worker_env(
                emulator,
                stack.queue_url,
                stack.output_bucket,
                AWS_ENDPOINT_URL=layer.endpoint if layer else emulator.endpoint,
                HANDLER=sample_code.HANDLER,
                OUTPUT_PREFIX=OUTPUT_PREFIX,
                WORKER_CONCURRENCY="4",
                IDLE_EXIT_SECONDS="3",
                STOP_GRACE_SECONDS="2",
                RETRY_DELAY_SECONDS=str(settings.retry_delay),
                **{sample_code.WORK_ENV: str(settings.work_ms)},
                **hostile_env,
            )
            fleet = Fleet(env, log_dir)
            drain(fleet, sqs, stack, settings, report)
            if layer:
                report.injected = layer.injected.snapshot()
        report.failures += verify(report, s3, sqs, stack, expected, poison, fleet, hostile)
        report.wall_seconds = time.monotonic() - started
    return report
