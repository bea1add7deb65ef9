"""``invoke chaos``: drain a queue while workers are killed at random, then prove nothing broke.

Spot's promise is only as good as the worst moment a host can vanish, so the driver picks that
moment at random, many times: every few seconds, while the queue still shows visible messages,
it reclaims a host as Spot does (``chaos.batch``): an interruption notice on the host's
instance metadata, then, after the compressed two-minute warning, the host gone (SIGKILL),
with no SIGTERM from Batch in between. The first reclaim hits array child 0, the sweeper;
some hit every child at once. Each child's end is judged by AWS Batch's rules for the job
definition Terraform renders (``batchspot.batchrules``), and a slot gets its next attempt only
when they say RETRY, never beyond its attempts; a child Batch would not retry stays gone, so
work the fleet would strand shows. The driver then waits for every worker to leave by itself
and checks what a user would:

* no item lost: every good source has its result;
* none stored twice: each result was written once, counted as object *versions* (the output
  bucket is versioned, so an overwrite could not hide) and as ``ok`` log lines, killed workers
  included;
* every result equals what the custom code returns for its source;
* nothing stranded: no message visible, in flight or delayed once every worker has left;
* the dead-letter queue holds exactly the poison seeded on purpose, no healthy item;
* every slot ends SUCCEEDED by Batch's rules, and no child's end is FAILED.

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
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchspot import seed
from batchspot.aws import queue_arn
from batchspot.awsrules import RulesLayer, aws_rules
from batchspot.batchrules import batch_rules
from batchspot.emulators import Emulator, emulator_at
from batchspot.fleet import Fleet, worker_env
from batchspot.policy import render_worker_policy
from batchspot.sources import list_sources
from batchspot_support import sample_code
from batchspot_support.chaos.batch import BatchSide
from batchspot_support.chaos.report import ChaosReport, verify
from batchspot_support.chaos.settings import ChaosSettings
from batchspot_support.chaos.stack import (
    OUTPUT_PREFIX,
    WORKER_RECIPE,
    ChaosStack,
    clients,
    create_stack,
    seed_batches,
    seed_hostile,
    seed_poison,
)
from batchspot_support.imds import InstanceMetadata
from worker.keys import derive_output_key
from worker.queue_depth import queue_counts


def storm(
    fleet: Fleet,
    batch: BatchSide,
    sqs: Any,
    stack: ChaosStack,
    settings: ChaosSettings,
    report: ChaosReport,
) -> None:
    """Reclaim hosts every few seconds while the queue still shows visible messages.

    The first reclaim lands as soon as the queue shows items in flight, not after a clock, and
    on array child 0, the sweeper; later ones on a random child, or, one time in
    ``1 / wave_rate``, on every child at once. Stops early if no worker runs any more.

    A blow also waits, past its time, while the storm has struck more blows than the fleet has
    deleted messages (plus one): a storm paced by the clock alone stopped each message more
    often on a slower (busier) machine, past the ``maxReceiveCount - 1`` stops the stack
    promises to survive (a healthy item was dead-lettered in two CI runs sharing the cores with
    the rest of the suite). On an idle machine the clock is the tighter bound.
    """
    rng = random.Random(settings.seed)
    seeded = queue_counts(sqs, stack.queue_url).total  # before any worker can delete one
    for slot in range(settings.workers):
        batch.start(fleet, slot)
    deadline = time.monotonic() + settings.timeout
    next_blow: float | None = None  # set once workers are first seen mid-item
    blows = 0
    while time.monotonic() < deadline:
        time.sleep(0.25)
        batch.tick(fleet)
        running = fleet.running()
        counts = queue_counts(sqs, stack.queue_url)
        if not running or counts.visible == 0:
            return
        if next_blow is None and counts.in_flight:
            next_blow = time.monotonic()
        targets = [c for c in running if batch.may_strike(c)]
        within_work = blows <= seeded - counts.total  # one blow per message deleted, and one
        if next_blow is not None and time.monotonic() >= next_blow and targets and within_work:
            blows += 1
            if not report.blows:
                targets = [c for c in targets if c.slot == 0] or targets[:1]
            elif rng.random() < settings.wave_rate:
                report.blows["waves"] += 1
            else:
                targets = [rng.choice(targets)]
            for child in targets:
                batch.reclaim(child)
                report.blows["reclaims"] += 1
            next_blow = time.monotonic() + settings.interval * rng.uniform(0.5, 1.5)
    raise TimeoutError(f"the queue still showed visible messages after {settings.timeout:.0f} s")


def wait_for_own_exits(fleet: Fleet, batch: BatchSide, timeout: float) -> bool:
    """Wait until every worker has ended and Batch retried what it retries; False at timeout."""
    deadline = time.monotonic() + timeout
    while batch.tick(fleet) or fleet.running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def drain(
    fleet: Fleet,
    batch: BatchSide,
    sqs: Any,
    stack: ChaosStack,
    settings: ChaosSettings,
    report: ChaosReport,
) -> None:
    """Storm, then let the workers leave by themselves; record the time and any failure."""
    started = time.monotonic()
    try:
        storm(fleet, batch, sqs, stack, settings, report)
        if not wait_for_own_exits(fleet, batch, settings.exit_timeout):
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
    report.child_ends = batch.ends
    report.reclaims_of_the_sweeper = batch.reclaimed_slots[0]
    report.failed_slots = batch.failed_slots(fleet)


@contextlib.contextmanager
def rules_layer(
    settings: ChaosSettings, emulator: Emulator, sqs: Any, stack: ChaosStack, work_dir: Path
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


def seed_good(
    s3: Any,
    sqs: Any,
    stack: ChaosStack,
    sources: dict[str, list[tuple[str, str]]],
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """Queue the good sources, one a message or in batches; return what each result must hold.

    By result key: each of its sources (``s3://bucket/key``) with the custom code's result.
    """
    bucket = stack.input_bucket

    def results(keys: list[str]) -> dict[str, Any]:
        return {f"s3://{bucket}/{key}": sample_code.expected_result(sources[key]) for key in keys}

    if batch_size:
        batches = seed_batches(s3, sqs, stack, "good/", batch_size)
        return {result_key: results(keys) for result_key, keys in batches.items()}
    seed.seed(s3, sqs, queue_url=stack.queue_url, bucket=bucket, prefix="good/")
    etags = {s.key: s.etag for s in list_sources(s3, bucket, "good/")}
    return {
        derive_output_key(OUTPUT_PREFIX, bucket, key, etags[key], WORKER_RECIPE): results([key])
        for key in sources
    }


def run_chaos(settings: ChaosSettings, log_dir: Path, endpoint: str | None = None) -> ChaosReport:
    """Seed, storm, verify; LocalStack is started natively unless ``endpoint`` is given."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with emulator_at(endpoint, log_dir, "localstack") as emulator:
        started = time.monotonic()
        s3, sqs = clients(emulator)
        stack = create_stack(s3, sqs, settings)
        sources = sample_code.upload_sources(
            s3, stack.input_bucket, settings.items, settings.seed, prefix="good/"
        )
        expected = seed_good(s3, sqs, stack, sources, settings.batch_size)
        poison = seed_poison(s3, sqs, stack)
        hostile = seed_hostile(s3, sqs, stack) if settings.hostile else []
        report = ChaosReport(
            settings,
            f"{emulator.name} at {emulator.endpoint}",
            good=sum(len(items) for items in expected.values()),
            poison=len(poison),
            hostile=len(hostile),
        )
        hostile_env = (
            {"QUERY_ENGINE": "local", "ITEM_TIMEOUT_SECONDS": f"{settings.item_timeout:g}"}
            if settings.hostile
            else {}
        )
        rules = batch_rules(log_dir / "job-definition", job_attempts=settings.job_attempts)
        with rules_layer(settings, emulator, sqs, stack, log_dir / "policy") as layer:
            env = worker_env(
                emulator.client_env(),
                stack.queue_url,
                stack.output_bucket,
                AWS_ENDPOINT_URL=layer.endpoint if layer else emulator.endpoint,
                HANDLER=sample_code.HANDLER,
                OUTPUT_PREFIX=OUTPUT_PREFIX,
                WORKER_CONCURRENCY="4",
                IDLE_EXIT_SECONDS="3",
                RETRY_DELAY_SECONDS=str(settings.retry_delay),
                **{sample_code.WORK_ENV: str(settings.work_ms)},
                **hostile_env,
            )
            env.pop("AWS_EC2_METADATA_DISABLED", None)  # each child reads its host's IMDS
            fleet = Fleet(env, log_dir)
            with InstanceMetadata() as imds:
                batch = BatchSide(rules, imds, settings.spot_warning)
                drain(fleet, batch, sqs, stack, settings, report)
            if layer:
                report.injected = layer.injected.snapshot()
        report.failures += verify(report, s3, sqs, stack, expected, poison, fleet, hostile)
        report.wall_seconds = time.monotonic() - started
    return report
