"""The worker image itself: who it runs as, how it stops, its examples, its CPU count, and
how it refuses a stack that is not there. Each container runs as the job definition runs it on
EC2 (read-only root, tmpfs /tmp, init, non-root), against moto's S3 and SQS over the host's
network.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from batchspot.sample_data import upload_dataset
from tests.container.conftest import container_env, logs_of, run_container, wait_exit
from tests.integration.harness import (
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    send_all,
    wait_until,
)
from tests.integration.test_examples_in_worker import ROWS, expected_summaries

WORKER_UID = 10001


def test_image_runs_as_the_unprivileged_worker_on_a_read_only_root(docker_client, worker_image):
    assert docker_client.images.get(worker_image).attrs["Config"]["User"] == "10001:10001"
    probe = (
        "import os, tempfile\n"
        "print(os.getuid(), os.getgid())\n"
        "tempfile.TemporaryFile().write(b'x')\n"  # the worker's spools go to /tmp
        "try:\n"
        "    open('/app/written', 'w')\n"
        "except OSError as error:\n"
        "    print(error.strerror)\n"
    )
    container = run_container(docker_client, worker_image, {}, command=["python", "-c", probe])
    assert wait_exit(container) == 0, logs_of(container)
    assert logs_of(container).split("\n")[:2] == [
        f"{WORKER_UID} {WORKER_UID}",
        "Read-only file system",
    ]
    container.remove()


@pytest.mark.parametrize(
    "settings",
    [
        {"HANDLER": "examples.handlers.trip_stats:summarise"},
        {"HANDLER_COMMAND": "sh examples/command/trip_stats.sh", "ROWS_FORMAT": "csv"},
    ],
    ids=["python-callable", "sh-command"],
)
def test_every_example_runs_inside_the_image_as_its_readme_shows(
    docker_client, worker_image, batch_moto, sqs, s3, settings
):
    stack = make_stack(sqs, s3)
    keys = upload_dataset(s3, stack.input_bucket, rows=ROWS)
    messages = [json.dumps({"bucket": stack.input_bucket, "key": key}) for key in keys]
    send_all(sqs, stack.queue_url, messages)

    container = run_container(
        docker_client, worker_image, container_env(batch_moto, stack, **settings), cpus=2
    )

    assert wait_exit(container) == 0, logs_of(container)[-3000:]
    stored = [json.loads(body) for body in output_objects(s3, stack.output_bucket).values()]
    assert sorted(stored, key=json.dumps) == sorted(expected_summaries(), key=json.dumps)
    container.remove()


def test_docker_stop_gives_every_held_message_back_and_loses_nothing(
    docker_client, worker_image, batch_moto, sqs, s3
):
    """``docker stop`` sends SIGTERM, as ECS does when Batch stops a job; then SIGKILL after
    its timeout. The worker must hand back what it holds within STOP_GRACE_SECONDS and exit 0
    before that kill (exit 137 would mean it overran)."""
    stack = make_stack(sqs, s3, visibility=600)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 6))
    held = container_env(
        batch_moto,
        stack,
        WORKER_PROCESSES="1",
        HANDLER_COMMAND="sleep 600",  # every item runs until the stop
        STOP_GRACE_SECONDS="2",
        IDLE_EXIT_SECONDS="600",
    )
    container = run_container(docker_client, worker_image, held)
    wait_until(lambda: queue_depths(sqs, stack.queue_url) == (0, 6), "the worker holds all 6")

    container.stop(timeout=2 + 10)

    assert wait_exit(container) == 0, logs_of(container)[-3000:]
    assert queue_depths(sqs, stack.queue_url) == (6, 0), "held messages were not given back"
    container.remove()
    # Nothing lost: a fresh container stores every item once.
    fresh = run_container(docker_client, worker_image, container_env(batch_moto, stack))
    assert wait_exit(fresh) == 0, logs_of(fresh)[-3000:]
    assert len(output_objects(s3, stack.output_bucket)) == 6
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    fresh.remove()


@pytest.mark.parametrize("cpus", [1, 2])
def test_worker_processes_auto_is_the_cpu_quota(
    docker_client, worker_image, batch_moto, sqs, s3, cpus
):
    stack = make_stack(sqs, s3)
    env = container_env(batch_moto, stack, WORKER_PROCESSES="auto", IDLE_EXIT_SECONDS="1")

    container = run_container(docker_client, worker_image, env, cpus=cpus)

    assert wait_exit(container) == 0, logs_of(container)[-3000:]
    processes = {event["process"] for event in log_events(logs_of(container), "summary")}
    assert processes == set(range(cpus))
    container.remove()


@pytest.mark.parametrize("missing", ["queue", "bucket"])
def test_a_stack_that_is_not_there_is_exit_2_and_one_sentence(
    docker_client, worker_image, batch_moto, sqs, s3, missing
):
    stack = make_stack(sqs, s3)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    env: dict[str, Any] = container_env(batch_moto, stack)
    if missing == "queue":
        env["SQS_QUEUE_URL"] = stack.queue_url.rsplit("/", 1)[0] + "/" + name
    else:
        env["OUTPUT_BUCKET"] = name

    container = run_container(docker_client, worker_image, env, cpus=2)

    assert wait_exit(container) == 2, logs_of(container)[-3000:]
    stderr = container.logs(stdout=False, stderr=True).decode().strip().splitlines()
    assert len(stderr) == 1 and name in stderr[0], stderr
    assert "Traceback" not in logs_of(container)
    container.remove()
