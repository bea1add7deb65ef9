"""The worker's configuration: environment variables, as in the Batch job definition.

Everything is read once at start and checked, so that a misconfigured job fails in its first
second with one clear sentence instead of sending every message to the dead-letter queue.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from worker.keys import BUILT_IN_CODE, Recipe, default_query
from worker.manifest import Run
from worker.metrics import NAME_DIMENSION, QUEUE_DIMENSION
from worker.processes import PROCESS_INDEX_VARIABLE, available_cpus

DEFAULT_OUTPUT_PREFIX = "results/"
# Batch sets the job queue's name in every container; the job's name it does not set, so
# `invoke submit` passes its --name in this variable. Both name the metrics' dimensions.
JOB_QUEUE_VARIABLE = "AWS_BATCH_JQ_NAME"
JOB_NAME_VARIABLE = "BATCHSPOT_JOB_NAME"
# What a CloudWatch dimension value may be, narrowed to what Batch allows in a job name.
_BATCH_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_ITEM_SECONDS = 12 * 3600 - 60
# A worker stops taking work this long, plus an item's deadline, before its attempt timeout:
# Batch counts from the container's start, and giving back and exiting take a moment too.
TIME_LIMIT_MARGIN_SECONDS = 60.0


class ConfigError(ValueError):
    """The environment does not describe a runnable worker."""


@dataclass(frozen=True)
class Config:
    """Validated settings; see the README's configuration table for each variable."""

    queue_url: str
    output_bucket: str
    output_prefix: str = DEFAULT_OUTPUT_PREFIX
    query_limit: int | None = None
    query_engine: Literal["auto", "s3select", "local"] = "auto"
    rows_format: Literal["json", "csv"] = "json"
    handler: str | None = None
    handler_command: str | None = None
    handler_timeout: float = 900.0
    item_timeout: float = 2 * 900.0
    retry_delay_seconds: float = 30.0
    concurrency: int = 4
    # Worker processes in this container (WORKER_PROCESSES, ``auto`` resolved), and this
    # process's number among them (set by the supervisor in worker.processes).
    processes: int = 1
    process_index: int = 0
    idle_exit_seconds: float = 60.0
    stop_grace_seconds: float = 25.0
    wait_time_seconds: int = 20
    max_output_bytes: int = 5 * 1024**3
    allowed_output_buckets: frozenset[str] = field(default_factory=frozenset)
    spot_notice_interval: float = 5.0
    # The job definition's attempt timeout (JOB_TIMEOUT_SECONDS): Batch never retries an
    # attempt it stops for running too long, so the worker leaves before it.
    job_timeout: float | None = None
    job_id: str = "local"
    array_index: int | None = None
    attempt: int = 1
    code_version: str = ""
    job_queue: str = "local"
    job_name: str = "unnamed"

    @property
    def default_query(self) -> str:
        """The query run when a message names none: the original job's ``select *``."""
        return default_query(self.query_limit)

    @property
    def recipe(self) -> Recipe:
        """The run's recipe, which keys its results (``worker.keys``).

        The code's identity is CODE_VERSION (the image) and the handler's own text: the same
        image run with another HANDLER_COMMAND makes other results.
        """
        handler = self.handler or self.handler_command or BUILT_IN_CODE
        return Recipe(
            query=self.default_query,
            rows_format=self.rows_format,
            code="\n".join(filter(None, (self.code_version, handler))),
        )

    @property
    def run(self) -> Run:
        """Return the run this job serves: an array child's job id without ``:<index>``."""
        return Run(
            self.job_id.split(":", 1)[0], self.output_bucket, self.output_prefix, self.queue_url
        )

    @property
    def settle_margin(self) -> float:
        """Seconds before an item's deadline by which its work must stop.

        The heartbeat never keeps a message past the deadline, so the item's failure must be
        reported (and the message given back) while the message is still ours.
        """
        return min(5.0, self.item_timeout / 10)

    @property
    def work_seconds(self) -> float | None:
        """How long after its start the worker may take new work; None: no attempt timeout."""
        if self.job_timeout is None:
            return None
        return self.job_timeout - self.item_timeout - TIME_LIMIT_MARGIN_SECONDS

    @property
    def metric_dimensions(self) -> dict[str, str]:
        """The dimensions of the metrics the worker's log lines carry (``worker.metrics``)."""
        return {QUEUE_DIMENSION: self.job_queue, NAME_DIMENSION: self.job_name}

    def output_bucket_allowed(self, bucket: str) -> bool:
        """Whether a message may direct its output to ``bucket``."""
        return bucket == self.output_bucket or bucket in self.allowed_output_buckets


_LIMIT = re.compile(r"^\s*(?:LIMIT\s+)?(\d+)\s*$", re.IGNORECASE)


def parse_query_limit(raw: str) -> int | None:
    """Accept ``10000`` and `` LIMIT 10000`` (the original job definition's form)."""
    if not raw.strip():
        return None
    match = _LIMIT.match(raw)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(
            f"S3_QUERY_LIMIT must be a positive number of rows like 10000 or ' LIMIT 10000', "
            f"got {raw!r}"
        )
    return int(match.group(1))


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value < float("inf"):  # also refuses nan and inf
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _processes(env: Mapping[str, str]) -> int:
    """WORKER_PROCESSES: ``auto`` (one per CPU the container is given) or a count."""
    raw = env.get("WORKER_PROCESSES", "").strip().lower() or "auto"
    if raw == "auto":
        return available_cpus()[0]
    if not raw.isdecimal() or int(raw) < 1:
        raise ConfigError(f"WORKER_PROCESSES must be auto or a whole number from 1, got {raw!r}")
    return int(raw)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _batch_name(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not _BATCH_NAME.fullmatch(value):
        raise ConfigError(
            f"{name} must be 1 to 128 letters, digits, hyphens or underscores, as Batch names "
            f"are, got {value[:200]!r}"
        )
    return value


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the worker's environment; raise :class:`ConfigError` if unusable."""
    env = os.environ if env is None else env
    queue_url = env.get("SQS_QUEUE_URL", "").strip()
    if not queue_url:
        raise ConfigError("SQS_QUEUE_URL is not set: the worker needs the URL of its work queue")
    output_bucket = env.get("OUTPUT_BUCKET", "").strip()
    if not output_bucket:
        raise ConfigError("OUTPUT_BUCKET is not set: the worker needs a bucket for its results")
    handler = env.get("HANDLER", "").strip() or None
    handler_command = env.get("HANDLER_COMMAND", "").strip() or None
    if handler and handler_command:
        raise ConfigError("set HANDLER or HANDLER_COMMAND, not both")
    if (
        handler
        and handler != "rows-to-json"
        and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", handler)
    ):
        raise ConfigError(f"HANDLER must look like package.module:function, got {handler!r}")
    handler_timeout = _number(env, "HANDLER_TIMEOUT", 900.0, 0.1)
    # The item's deadline covers query, custom code and store; by default the custom code's
    # own limit again for the reading and the writing around it. SQS keeps a message for at
    # most 12 hours after its receive, so no deadline may pass that.
    item_timeout = _number(env, "ITEM_TIMEOUT_SECONDS", 2 * handler_timeout, 1)
    if item_timeout > MAX_ITEM_SECONDS:
        raise ConfigError(
            f"ITEM_TIMEOUT_SECONDS must be at most {MAX_ITEM_SECONDS} (SQS keeps a message "
            f"invisible for at most 12 hours), got {item_timeout:g}"
            + (
                "; it defaults to twice HANDLER_TIMEOUT"
                if "ITEM_TIMEOUT_SECONDS" not in env
                else ""
            )
        )
    job_timeout = _number(env, "JOB_TIMEOUT_SECONDS", 0, 0) or None
    if job_timeout is not None and job_timeout - item_timeout - TIME_LIMIT_MARGIN_SECONDS <= 0:
        raise ConfigError(
            f"JOB_TIMEOUT_SECONDS ({job_timeout:g}) must exceed ITEM_TIMEOUT_SECONDS "
            f"({item_timeout:g}) by more than {TIME_LIMIT_MARGIN_SECONDS:g} s, or no item "
            "could finish before Batch stops the attempt"
        )
    array_index = env.get("AWS_BATCH_JOB_ARRAY_INDEX", "").strip()
    allowed = {b.strip() for b in env.get("ALLOWED_OUTPUT_BUCKETS", "").split(",") if b.strip()}
    return Config(
        queue_url=queue_url,
        output_bucket=output_bucket,
        output_prefix=env.get("OUTPUT_PREFIX", DEFAULT_OUTPUT_PREFIX),
        query_limit=parse_query_limit(env.get("S3_QUERY_LIMIT", "")),
        query_engine=_choice(env, "QUERY_ENGINE", ("auto", "s3select", "local")),  # type: ignore[arg-type]
        rows_format=_choice(env, "ROWS_FORMAT", ("json", "csv")),  # type: ignore[arg-type]
        handler=None if handler == "rows-to-json" else handler,
        handler_command=handler_command,
        handler_timeout=handler_timeout,
        item_timeout=item_timeout,
        retry_delay_seconds=_number(env, "RETRY_DELAY_SECONDS", 30.0, 0),
        concurrency=int(_number(env, "WORKER_CONCURRENCY", 4, 1)),
        processes=_processes(env),
        process_index=int(_number(env, PROCESS_INDEX_VARIABLE, 0, 0)),
        idle_exit_seconds=_number(env, "IDLE_EXIT_SECONDS", 60.0, 0),
        stop_grace_seconds=_number(env, "STOP_GRACE_SECONDS", 25.0, 0),
        wait_time_seconds=int(min(_number(env, "WAIT_TIME_SECONDS", 20, 0), 20)),
        max_output_bytes=int(_number(env, "MAX_OUTPUT_BYTES", 5 * 1024**3, 1)),
        allowed_output_buckets=frozenset(allowed),
        spot_notice_interval=_number(env, "SPOT_NOTICE_INTERVAL", 5.0, 0.1),
        job_timeout=job_timeout,
        job_id=env.get("AWS_BATCH_JOB_ID", "local"),
        array_index=int(array_index) if array_index.isdecimal() else None,
        attempt=int(_number(env, "AWS_BATCH_JOB_ATTEMPT", 1, 1)),
        code_version=env.get("CODE_VERSION", "").strip(),
        job_queue=_batch_name(env, JOB_QUEUE_VARIABLE, "local"),
        job_name=_batch_name(env, JOB_NAME_VARIABLE, "unnamed"),
    )
