"""The final step of a run: ``python -m worker.final``, in the worker image, after the array job.

``invoke submit --then COMMAND`` submits it as a job that depends on the array job, so it
starts once every child has ended. It builds the run's manifest (``worker.manifest``); given a
command, it runs it once over all the results (a reduce step): the merged JSON lines on its
stdin, its stdout (one JSON document) stored as ``runs/<job-id>/final.json``. It fails, so a
job depending on it does not run on a broken or unfinished run, when more than
TOLERATE_FAILURES percent of the items failed, or when messages are still pending in the work
queue (waiting, in flight or delayed: the array job ended before them, e.g. every child was
reclaimed), unless TOLERATE_PENDING is true; then the command is not run.

Its environment is the workers' (the job definition's) plus RUN_JOB_ID (the array job),
RUN_STARTED (when it was submitted, ISO 8601), FINAL_COMMAND, TOLERATE_FAILURES,
TOLERATE_PENDING and QUEUED_ITEMS_PER_MESSAGE: SQS counts the queues' messages, a batch
message holds up to 1,000 items, and only the seeds know how many (``invoke submit`` passes
their ratio, as ``invoke status`` shows it); without it the counts say the bound.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import boto3

from worker.config import ConfigError, load_config
from worker.handlers import HandlerError, JsonFile
from worker.logs import log
from worker.manifest import Manifest, Run, build_manifest, merge, read_entries
from worker.messages import MAX_BATCH_ITEMS
from worker.queue_depth import ITEMS_PER_MESSAGE_VARIABLE, held_items

EXIT_FAILED = 1


class FinalError(RuntimeError):
    """The final step could not do what was asked; the text says why."""


@dataclass(frozen=True)
class FinalSettings:
    """What the final step is asked to do besides the manifest."""

    command: str | None = None
    tolerate_failures: float = 100.0
    tolerate_pending: bool = False
    items_per_message: float | None = None  # of the queues' messages, as seeded; None: unknown


def load_final(env: Mapping[str, str]) -> tuple[Run, FinalSettings]:
    """Read the workers' settings and the final step's own variables (the module's docstring).

    Raise :class:`ConfigError` with one sentence for a value that cannot be used.
    """
    config = load_config(env)
    run_id = env.get("RUN_JOB_ID", "").strip()
    if not run_id:
        raise ConfigError("RUN_JOB_ID is not set: the final step needs the array job's id")
    started = env.get("RUN_STARTED", "").strip()
    try:
        since = datetime.fromisoformat(started) if started else None
    except ValueError:
        raise ConfigError(f"RUN_STARTED must be an ISO 8601 time, got {started!r}") from None
    if since is not None and since.tzinfo is None:
        raise ConfigError(f"RUN_STARTED must carry its time zone, got {started!r}")
    tolerate = env.get("TOLERATE_FAILURES", "").strip() or "100"
    try:
        share = float(tolerate)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 100:
        raise ConfigError(f"TOLERATE_FAILURES must be a percentage 0..100, got {tolerate!r}")
    pending = env.get("TOLERATE_PENDING", "").strip().lower() or "false"
    if pending not in ("true", "false"):
        raise ConfigError(f"TOLERATE_PENDING must be true or false, got {pending!r}")
    run = replace(config.run, run_id=run_id, since=since)
    command = env.get("FINAL_COMMAND", "").strip() or None
    return run, FinalSettings(
        command,
        share,
        tolerate_pending=pending == "true",
        items_per_message=_items_per_message(env.get(ITEMS_PER_MESSAGE_VARIABLE, "").strip()),
    )


def _items_per_message(raw: str) -> float | None:
    """Parse QUEUED_ITEMS_PER_MESSAGE: None when unset, else an average of at least one."""
    if not raw:
        return None
    try:
        ratio = float(raw)
    except ValueError:
        ratio = 0.0
    if not 1 <= ratio <= MAX_BATCH_ITEMS:
        raise ConfigError(
            f"{ITEMS_PER_MESSAGE_VARIABLE} must be a number from 1 to {MAX_BATCH_ITEMS}, "
            f"got {raw!r}"
        )
    return ratio


def reduce_results(s3: Any, manifest: Manifest, command: str) -> str:
    """Run ``command`` over the run's merged results; store its JSON stdout; return the key.

    The results stream from S3 into the command's stdin and its stdout goes to a temporary
    file, so neither side is held in memory.
    """
    key = f"{manifest.run.prefix}final.json"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=output)
        assert process.stdin is not None
        # A command that stops reading early breaks the pipe: its exit status says whether
        # that was right.
        with contextlib.suppress(BrokenPipeError), process.stdin:
            entries = read_entries(s3, manifest.bucket, manifest.succeeded_key)
            merge(s3, manifest.bucket, entries, process.stdin, manifest.run.output_prefix)
        status = process.wait()
        if status:
            raise FinalError(f"the final command exited with status {status}: {command}")
        try:
            JsonFile(output).validate()  # as the worker checks a HANDLER_COMMAND's output
        except HandlerError as error:
            raise FinalError(f"the final {error}") from None
        output.seek(0)
        s3.upload_fileobj(
            output, manifest.bucket, key, ExtraArgs={"ContentType": "application/json"}
        )
    return key


def run_final(
    s3: Any, sqs: Any, run: Run, settings: FinalSettings = FinalSettings()
) -> tuple[Manifest, str | None]:
    """Build the manifest, run the command if any; raise FinalError for a broken run.

    Broken: messages still pending in the work queue (not tolerated), checked before the command
    runs, since it would reduce a part of the run; or more than the tolerated share failed.
    Return the manifest and the key of the command's stored output (None without a command).
    """
    manifest = build_manifest(s3, sqs, run)
    pending = manifest.counts.pending
    if pending and not settings.tolerate_pending:
        raise FinalError(
            f"the work queue still holds {pending} message(s) waiting, in flight or delayed"
            f"{held_items(pending, settings.items_per_message)}, so the run is not finished; "
            f"see {manifest.uri}, or set TOLERATE_PENDING=true (invoke submit "
            "--tolerate-pending) to go on"
        )
    final_key = reduce_results(s3, manifest, settings.command) if settings.command else None
    share = manifest.counts.failed_share
    if share > settings.tolerate_failures:
        raise FinalError(
            f"{share:.1f}% of the items failed, more than TOLERATE_FAILURES="
            f"{settings.tolerate_failures:g}%; see {manifest.failed_key}"
        )
    return manifest, final_key


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the final step from the environment; log what it did; return the exit status."""
    env = os.environ if env is None else env
    try:
        run, settings = load_final(env)
    except ConfigError as error:
        log("config-error", reason=str(error))
        return EXIT_FAILED
    try:
        manifest, final_key = run_final(boto3.client("s3"), boto3.client("sqs"), run, settings)
    except FinalError as error:
        log("final-failed", job_id=run.run_id, reason=str(error))
        return EXIT_FAILED
    log(
        "final",
        job_id=run.run_id,
        manifest=manifest.uri,
        final=f"s3://{manifest.bucket}/{final_key}" if final_key else None,
        counts=manifest.counts.render(settings.items_per_message),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
