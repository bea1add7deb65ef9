"""``python -m worker``: the image's default command, one per AWS Batch array child.

With ``WORKER_PROCESSES`` above 1 it starts that many worker processes and supervises them
(:mod:`worker.processes`); each is this same command with ``WORKER_PROCESSES=1``.

Exit codes, each chosen for what the job definition's retry strategy does with it (see
``terraform/modules/batch/job_definition.tf`` and :mod:`batchspot.batchrules`):

* 0 (SUCCEEDED, not run again): the queue stayed empty, or Batch stopped the job (SIGTERM);
* 2 (FAILED at once, not retried): a configuration error, in one sentence on stderr: a
  variable, a missing queue or bucket, no permission;
* 3 (retried): custom code hung in every thread, which only a fresh container frees;
* 75 (retried, ``EX_TEMPFAIL``): come back later: a start-up error that outlasted its
  retries (throttling, connection refused, expired credentials), a host still there after its
  Spot notice, or the attempt's time limit reached with work left on the queue.

After a Spot notice the child takes nothing new, gives back what has not started, lets the
running items finish while the notice's time allows, gives back the rest and waits for its
host to go: Batch records ``Host EC2 (instance i-…) terminated.``, which the strategy
retries. With several processes, the worst code of theirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from worker.long_lived import freeze_new_imports
from worker.stopping import (
    SpotNoticeWatcher,
    StopSignal,
    install_signal_handlers,
    wait_for_host,
)

if TYPE_CHECKING:
    from worker.config import Config
    from worker.loop import Worker

EXIT_CONFIG = 2
# Start-up calls that fail with an error botocore does not retry but a moment may cure
# (credentials expired mid-refresh) are tried this many times, 2 s, 4 s... apart.
STARTUP_ATTEMPTS = 4
STARTUP_BACKOFF = 2.0
CONNECT_TIMEOUT = 5
# Every extension and delete goes through one heartbeat thread: its calls must fail fast
# (and be retried on the next tick) rather than hang behind one stuck connection.
HEARTBEAT_READ_TIMEOUT = 5
HEARTBEAT_ATTEMPTS = 2
# S3 and receives retry throttling (503 SlowDown, RequestThrottled) in botocore's adaptive
# mode, which also slows this client's request rate while AWS pushes back: 10 attempts a call
# (9 retries), with exponential backoff capped at 20 s each, within the mode's retry quota.
# These are defaults for botocore's own AWS_RETRY_MODE and AWS_MAX_ATTEMPTS (total attempts),
# so an operator tunes them the way any boto3 program is tuned.
RETRY_DEFAULTS = {"AWS_RETRY_MODE": "adaptive", "AWS_MAX_ATTEMPTS": "10"}


def queue_settings(sqs: Any, queue_url: str) -> tuple[int, int | None]:
    """Read the queue's visibility timeout and maxReceiveCount (None without a DLQ).

    Raises ConfigError if the queue does not exist or may not be read.
    """
    from botocore.exceptions import ClientError

    from worker.config import ConfigError
    from worker.errors import NO_SUCH_QUEUE_CODES, describe, error_code, is_transient

    try:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
    except ClientError as error:
        if error_code(error) in NO_SUCH_QUEUE_CODES:
            raise ConfigError(f"SQS_QUEUE_URL {queue_url!r} names no queue") from None
        if is_transient(error):
            raise
        raise ConfigError(f"the work queue cannot be read: {describe(error)}") from None
    redrive = attributes.get("RedrivePolicy")
    max_receive = int(json.loads(redrive)["maxReceiveCount"]) if redrive else None
    return int(attributes.get("VisibilityTimeout", "30")), max_receive


def check_output_writable(s3: Any, config: Config) -> None:
    """Refuse to start when results could not be stored, instead of failing every item.

    Starting and aborting a multipart upload under OUTPUT_PREFIX needs exactly the write
    permission items need (s3:PutObject, s3:AbortMultipartUpload) and leaves no object,
    where HeadBucket would need s3:ListBucket, which the job role does not have.
    """
    from botocore.exceptions import ClientError

    from worker.config import ConfigError
    from worker.errors import PERMANENT_WRITE_CODES, describe, error_code
    from worker.logs import log

    where = f"s3://{config.output_bucket}/{config.output_prefix}"
    key = f"{config.output_prefix}.write-check/{config.job_id}-{os.getpid()}"
    try:
        upload = s3.create_multipart_upload(Bucket=config.output_bucket, Key=key)
    except ClientError as error:
        code = error_code(error)
        if code == "NoSuchBucket":
            raise ConfigError(f"OUTPUT_BUCKET {config.output_bucket!r} does not exist") from None
        if code in PERMANENT_WRITE_CODES:
            raise ConfigError(
                f"results cannot be written to {where} ({code}): the job role needs "
                f"s3:PutObject on {config.output_bucket}/{config.output_prefix}*"
            ) from None
        # Throttling or an S3 hiccup says nothing about the bucket: items will find out.
        log("output-check-skipped", reason=describe(error))
        return
    with contextlib.suppress(ClientError):  # an upload left behind is cleaned by the lifecycle
        s3.abort_multipart_upload(Bucket=config.output_bucket, Key=key, UploadId=upload["UploadId"])


def build_worker(config: Config, stop: StopSignal) -> Worker:
    """Create the clients and collaborators; boto3 finds endpoints in AWS_ENDPOINT_URL*."""
    import boto3
    from botocore.config import Config as BotoConfig

    from worker.handlers import load_handler
    from worker.inflight import InFlight
    from worker.logs import log
    from worker.loop import Worker
    from worker.metrics import CallCounter
    from worker.output import ResultStore
    from worker.process import Services

    for name, value in RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    counter = CallCounter()
    boto_config = BotoConfig(
        max_pool_connections=config.concurrency + 4,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=60,
    )
    sqs = counter.attach(
        boto3.client(
            "sqs", config=boto_config.merge(BotoConfig(read_timeout=config.wait_time_seconds + 10))
        )
    )
    heartbeat_sqs = counter.attach(
        boto3.client(
            "sqs",
            config=boto_config.merge(
                BotoConfig(
                    read_timeout=HEARTBEAT_READ_TIMEOUT,
                    retries={"mode": "standard", "total_max_attempts": HEARTBEAT_ATTEMPTS},
                )
            ),
        )
    )
    s3 = counter.attach(boto3.client("s3", config=boto_config))
    handler = load_handler(config)
    visibility_timeout, max_receive_count = queue_settings(sqs, config.queue_url)
    check_output_writable(s3, config)
    if max_receive_count is None:
        log("warning", reason="queue has no dead-letter queue: failing items retry forever")
    log(
        "start",
        queue=config.queue_url,
        output=f"s3://{config.output_bucket}/{config.output_prefix}",
        handler=handler.name,
        engine=config.query_engine,
        concurrency=config.concurrency,
        process=config.process_index,
        visibility_timeout=visibility_timeout,
        max_receive_count=max_receive_count,
        job_id=config.job_id,
        array_index=config.array_index,
        pid=os.getpid(),
    )
    return Worker(
        config=config,
        sqs=sqs,
        services=Services(s3=s3, store=ResultStore(s3, config.max_output_bytes), handler=handler),
        inflight=InFlight(heartbeat_sqs, config.queue_url, visibility_timeout),
        stop=stop,
        counter=counter,
        max_receive_count=max_receive_count,
        visibility_timeout=visibility_timeout,
    )


def start_worker(config: Config, stop: StopSignal) -> Worker:
    """Build the worker, trying again on errors a moment may cure.

    Throttling and connection errors were already retried with backoff by botocore (its
    ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS``); expired credentials are not, so they get a
    few more tries here. Raises the last transient error once they are spent.
    """
    from worker.errors import needs_credentials_refresh
    from worker.logs import log

    attempt = 1
    while True:
        try:
            return build_worker(config, stop)
        except Exception as error:
            if attempt >= STARTUP_ATTEMPTS or not needs_credentials_refresh(error):
                raise
            pause = STARTUP_BACKOFF * 2 ** (attempt - 1)
            log("start-retry", reason=str(error), attempt=attempt, pause=pause)
            if stop.wait(pause):
                raise
            attempt += 1


def main() -> int:
    """Configure, run, and return the exit code."""
    # Signal handlers come first: Batch may stop a child while it is still importing, and a
    # SIGTERM must mean "exit 0, nothing held" then too. The heavy imports follow.
    stop = StopSignal()
    install_signal_handlers(stop)
    from worker.config import ConfigError, load_config
    from worker.errors import is_transient
    from worker.loop import EXIT_RETRY

    config = None
    try:
        config = load_config()
        if config.processes > 1:
            from worker.processes import supervise

            return supervise(config.processes, stop)
        # Before the clients are built, so that its first look at the notice is over by then.
        watcher = SpotNoticeWatcher(stop, config.spot_notice_interval)
        watcher.start()
        worker = start_worker(config, stop)
        freeze_new_imports()  # the clients, the handler and the modules: kept for life
    except ConfigError as error:
        # The processes of one container check the same queue and bucket: process 0 says why,
        # so the container's log holds the one sentence once.
        if config is None or config.process_index == 0:
            print(f"worker: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as error:
        if not is_transient(error):
            raise
        if config is None or config.process_index == 0:
            print(f"worker: could not start, to be retried: {error}", file=sys.stderr)
        return EXIT_RETRY
    watcher.wait_for_first_check()
    code = worker.run()
    if stop.host_leaves_at is not None:
        # Everything is given back; exiting now would make this slot SUCCEEDED for good.
        wait_for_host(stop)
        code = max(code, EXIT_RETRY)
    sys.stdout.flush()
    # Threads of abandoned custom code must not keep the process alive.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
