"""``invoke local``: the whole pipeline on one machine, for a new user with only Python.

The same steps as on AWS, each through the same code: an AWS emulator stands in for the
account (moto's server by default, started here; or a LocalStack named by ``endpoint``), the
Terraform stack is applied to it (``deploy --local``), a generated sample of NYC-taxi-shaped
CSVs is uploaded and seeded from a listing, and N worker processes run as the children of an
array job would, with the job definition's own environment. The final step builds the run's
manifest, as ``invoke submit --then`` does after the array job. The run ends with a summary and
the results copied to a local folder (the emulator's state ends with it).

With ``containers``, the workers are the image instead: it is built, the job definition names
it, and moto's Batch runs the array job and the final job as its containers
(:mod:`batchspot.local_batch`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, get_args

from batchspot import image, terraform
from batchspot.aws import client
from batchspot.cost import CostReport, offline_table, run_cost, saving
from batchspot.emulators import Emulator, emulator_at
from batchspot.environment import overridden
from batchspot.errors import OperatorError
from batchspot.fleet import Fleet, worker_env
from batchspot.local_batch import (
    ArrayRun,
    ContainerRunError,
    remove_containers,
    run_array_job,
)
from batchspot.progress import Progress
from batchspot.report import (
    RunLog,
    estimated_costs,
    from_log_dir,
    write_report,
)
from batchspot.sample_data import Format, upload_dataset
from batchspot.seed import seed
from worker.final import FinalSettings, run_final
from worker.manifest import Counts, Run
from worker.queue_depth import queue_counts

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".batchspot" / "local"
SAMPLE_PREFIX = "trip data/"
# The sample is seeded one item a message, so the queues' counts are its items.
SAMPLE_ITEMS_PER_MESSAGE = 1.0
# Storage and queue are what the stack needs from LocalStack's free edition; it has no Batch or ECR.
LOCALSTACK_TARGETS = ("module.storage", "module.queue")
# Priced for the estimate: the original write-up's instance type and its Spot price (an
# emulator has no real Spot price history).
ESTIMATE_INSTANCE_TYPE = "c4.4xlarge"
SPOT_PER_HOUR = 0.2526
CONTAINER_RUN_SECONDS = 900  # the sample drains in well under a minute


@dataclass
class LocalRun:
    """What a local run did, for the closing summary."""

    emulator: str
    items: int = 0
    ok: int = 0
    already_done: int = 0
    failed: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    worker_seconds: float = 0.0
    aws_calls: int = 0
    results_dir: Path | None = None
    results_uri: str = ""
    manifest_uri: str = ""
    report: Path | None = None
    item_counts: str = ""
    hosted: str = ""
    estimate: str = ""
    containers: str = ""
    worker_exit_codes: list[int] = field(default_factory=list)

    @property
    def calls_per_item(self) -> float | None:
        """AWS calls the workers made per item settled."""
        settled = self.ok + self.already_done + self.failed
        return self.aws_calls / settled if settled else None

    def summary(self) -> str:
        """Return the lines printed at the end of ``invoke local``."""
        per_item = f"{self.calls_per_item:.2f}" if self.calls_per_item else "n/a"
        return "\n".join(
            [
                f"emulator:         {self.emulator} ({self.hosted})",
                f"items:            {self.items} seeded, {self.ok} stored, "
                f"{self.already_done} already done, {self.failed} failed attempts",
                f"dead-letter:      {self.dead_lettered}",
                f"wall time:        {self.seconds:.1f} s "
                f"(workers busy {self.worker_seconds:.1f} s in all)",
                f"AWS calls/item:   {per_item}",
                f"results:          {self.results_uri} -> copied to {self.results_dir}",
                f"final step:       {self.item_counts}",
                f"manifest:         {self.manifest_uri}",
                f"report:           {self.report or 'none: no worker got as far as its start'}",
                f"on AWS:           {self.estimate}",
            ]
            + ([f"containers:       {self.containers}"] if self.containers else [])
        )


def _stack_state_dir(state_dir: Path, emulator: Emulator, name: str, reuse: bool) -> Path:
    """Terraform state for this emulator: kept for one that outlives runs, else fresh.

    A moto started for the run is empty, so state left by an earlier run would describe
    resources that no longer exist.
    """
    port = emulator.endpoint.rsplit(":", 1)[-1].strip("/")
    path = state_dir / "stacks" / f"{emulator.name}-{port}-{name}"
    if not reuse and path.exists():
        shutil.rmtree(path)
    return path


def job_environment(batch: Any, job_definition: str) -> dict[str, str]:
    """Return the environment the job definition gives each container, as Batch would."""
    definitions = batch.describe_job_definitions(jobDefinitions=[job_definition])["jobDefinitions"]
    if not definitions:
        raise RuntimeError(f"job definition {job_definition} not found on the emulator")
    newest = max(definitions, key=lambda d: d["revision"])
    return {e["name"]: e["value"] for e in newest["containerProperties"].get("environment", [])}


def worker_environment(outputs: dict[str, Any], aws_env: dict[str, str]) -> dict[str, str]:
    """Return the container environment: the job definition's where the emulator hosts Batch."""
    job = outputs.get("job_definition")
    settings = {
        "OUTPUT_PREFIX": outputs.get("output_prefix", "results/"),
        **(job_environment(client("batch"), job) if job else {}),
    }
    return worker_env(aws_env, outputs["queue_url"], outputs["output_bucket"], **settings)


def run_local(
    workers: int = 4,
    rows: int = 2000,
    endpoint: str | None = None,
    handler: str | None = None,
    state_dir: Path = STATE_DIR,
    name: str = "batchspot",
    *,
    containers: bool = False,
    local_base: bool = False,
    fmt: Format = "csv",
) -> LocalRun:
    """Run the whole pipeline against a local emulator; return what happened.

    ``name`` prefixes every resource, so several runs can share one long-lived emulator.
    ``containers`` runs the workers as containers of the image, built on the local base with
    ``local_base``, by moto's Batch (an ``endpoint`` must then be a moto started with
    ``MOTO_DOCKER_NETWORK_MODE=host``). ``fmt`` writes the sample as CSV or Parquet.
    """
    if fmt not in get_args(Format):
        raise OperatorError(f"--format must be one of {', '.join(get_args(Format))}, got {fmt!r}")
    state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    logs = state_dir / "logs"
    # This process's boto3 and Terraform use the emulator too, for the block.
    with (
        emulator_at(endpoint, logs, batch_containers=containers) as emulator,
        overridden(emulator.client_env()),
    ):
        aws_env = emulator.client_env()
        run = LocalRun(emulator=f"{emulator.name} at {emulator.endpoint}")
        targets = LOCALSTACK_TARGETS if emulator.name == "localstack" else ()
        if containers and targets:
            raise ContainerRunError(
                "--containers needs moto's Batch, and LocalStack's free edition has none"
            )
        run.hosted = (
            "queue and storage only: LocalStack's free edition has no Batch or ECR"
            if targets
            else "the whole stack"
        )
        image_name = (
            image.build_checkout(local_base=local_base, stream=False) if containers else None
        )
        if image_name:
            print(f"built {image_name}")
        print(f"deploying the Terraform stack to {emulator.endpoint} ({run.hosted}) ...")
        outputs = terraform.deploy(
            # moto's ECR hosts no registry: the job definition names the image built here.
            variables={"name": name, **({"image": image_name} if image_name else {})},
            local_endpoint=emulator.endpoint,
            state_dir=_stack_state_dir(state_dir, emulator, name, reuse=endpoint is not None),
            stream=False,
            targets=targets,
        )
        s3, sqs = client("s3"), client("sqs")
        keys = upload_dataset(s3, outputs["input_bucket"], rows=rows, fmt=fmt)
        print(
            f"uploaded {len(keys)} sample files to s3://{outputs['input_bucket']}/{SAMPLE_PREFIX}"
        )
        report = seed(
            s3,
            sqs,
            queue_url=outputs["queue_url"],
            bucket=outputs["input_bucket"],
            prefix=SAMPLE_PREFIX,
        )
        run.items = report.sent
        settings = {"IDLE_EXIT_SECONDS": "3", **({"HANDLER": handler} if handler else {})}
        prefix = outputs.get("output_prefix", "results/")
        array: ArrayRun | None = None
        if image_name:
            array = _run_containers(
                run, outputs, {**aws_env, **settings}, workers, name, image_name, sqs
            )
            job_id, summaries = array.job_id, array.summaries
        else:
            env = {**worker_environment(outputs, aws_env), **settings}
            env["AWS_BATCH_JOB_ID"] = job_id = f"local-{uuid.uuid4().hex[:8]}"
            summaries = _run_workers(env, workers, run.items, outputs["queue_url"], logs, sqs)
            run.worker_exit_codes = [s.get("exit_code", -1) for s in summaries]
        for summary in summaries:
            run.ok += summary.get("ok", 0)
            run.already_done += summary.get("already_done", 0)
            run.failed += summary.get("failed", 0)
            run.aws_calls += summary.get("aws_calls", 0)
            run.worker_seconds += summary.get("seconds", 0.0)
        run.dead_lettered = queue_counts(sqs, outputs["dlq_url"]).total
        run.results_uri = f"s3://{outputs['output_bucket']}/{prefix}"
        run.results_dir = _copy_results(s3, outputs["output_bucket"], prefix, state_dir / "results")
        run_of_job = Run(job_id, outputs["output_bucket"], prefix, outputs["queue_url"])
        if image_name:  # the final job's container wrote the manifest
            run.manifest_uri, run.item_counts = _written_manifest(s3, run_of_job)
        else:  # the final step as `invoke submit --then` runs it after the array job
            # Items left pending are shown in its counts, not raised: this run is for looking at.
            settings = FinalSettings(tolerate_pending=True)
            manifest, _ = run_final(s3, sqs, run_of_job, settings)
            run.manifest_uri, run.item_counts = (
                manifest.uri,
                manifest.counts.render(SAMPLE_ITEMS_PER_MESSAGE),
            )
        run.estimate = _estimate(run.worker_seconds)
        run.report = _write_report(
            state_dir,
            # The containers' logs are in CloudWatch (fetched once, with the summaries), as on
            # AWS; the processes' in files.
            array.log if array else partial(from_log_dir, logs, job_id),
        )
    run.seconds = time.monotonic() - started
    return run


def _run_containers(
    run: LocalRun,
    outputs: dict[str, Any],
    container_env: dict[str, str],
    size: int,
    name: str,
    image_name: str,
    sqs: Any,
) -> ArrayRun:
    """Run the array job as containers on moto's Batch; return what it did and logged."""
    print(f"submitting an array job of {size} children to moto's Batch, image {image_name}")
    try:
        with _progress(run.items, sqs, outputs["queue_url"]) as progress:
            array = run_array_job(
                client("batch"),
                client("logs"),
                client("ecr"),
                outputs=outputs,
                container_env=container_env,
                size=size,
                job_name=name,
                image_name=image_name,
                progress=progress,
                timeout=CONTAINER_RUN_SECONDS,
            )
    finally:
        remove_containers(image_name)
    run.containers = array.describe()
    run.worker_exit_codes = array.exit_codes
    return array


def _written_manifest(s3: Any, run: Run) -> tuple[str, str]:
    """Return the URI and counts of the manifest a final job wrote, or why there is none."""
    key = f"{run.prefix}manifest.json"
    try:
        document = json.loads(s3.get_object(Bucket=run.bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return "none: the final job wrote no manifest", "not run"
    return f"s3://{run.bucket}/{key}", Counts(**document["Counts"]).render(SAMPLE_ITEMS_PER_MESSAGE)


@contextlib.contextmanager
def _progress(items: int, sqs: Any, queue_url: str) -> Iterator[Callable[[], None]]:
    """Show a bar of the items no longer in the queue; the block calls the yielded update."""
    with Progress(total=items, unit="items", desc="processed") as progress:

        def update() -> None:
            progress.show(max(progress.done, items - queue_counts(sqs, queue_url).total))

        yield update
        update()


def _run_workers(
    env: dict[str, str], count: int, items: int, queue_url: str, log_dir: Path, sqs: Any
) -> list[dict[str, Any]]:
    """Start ``count`` workers as the children of array job AWS_BATCH_JOB_ID; show progress.

    Return their summaries.
    """
    job_id = env["AWS_BATCH_JOB_ID"]
    log_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(env, log_dir)
    for slot in range(count):
        fleet.start(slot)
    print(f"started {count} workers as array job {job_id}; logs in {log_dir}")
    with _progress(items, sqs, queue_url) as progress:
        while fleet.running():
            progress()
            time.sleep(0.5)
    summaries = [event for _, event in fleet.events("summary")]
    missing = count - len(summaries)
    return summaries + [{"exit_code": -1}] * missing


def _copy_results(s3: Any, bucket: str, prefix: str, target: Path) -> Path:
    """Copy the results out of the emulator, whose state ends with the run."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            path = target / entry["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, entry["Key"], str(path))
    return target


def _write_report(state_dir: Path, read: Callable[[], RunLog]) -> Path | None:
    """Draw the run's report from its workers' logs; None if no worker logged its start."""
    try:
        log = read()
    except OperatorError:
        return None
    path = state_dir / "report.png"
    write_report(log, local_cost(log), path)
    return path


def _ondemand_per_hour() -> float:
    return offline_table()["regions"]["us-east-1"][ESTIMATE_INSTANCE_TYPE]


def local_cost(log: RunLog) -> CostReport:
    """Price a local run's children as the closing estimate does (no instance of their own)."""
    return estimated_costs(log, ESTIMATE_INSTANCE_TYPE, SPOT_PER_HOUR, _ondemand_per_hour())


def _estimate(worker_seconds: float) -> str:
    """Price this run's busy worker time on the write-up's instance type, Spot vs On-Demand."""
    ondemand_per_hour = _ondemand_per_hour()
    ondemand = run_cost(worker_seconds, ondemand_per_hour) or 0.0
    spot = run_cost(worker_seconds, SPOT_PER_HOUR) or 0.0
    return (
        f"{worker_seconds:.0f} worker-seconds on a {ESTIMATE_INSTANCE_TYPE}: "
        f"{ondemand:.5f} $ On-Demand ({ondemand_per_hour} $/h, offline table) vs "
        f"{spot:.5f} $ Spot ({SPOT_PER_HOUR} $/h, the original write-up's), "
        f"{saving(spot, ondemand):.0%} saved"
    )
