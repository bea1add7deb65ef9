"""The image under the limits of the job definition Terraform renders for EC2 Spot.

moto's Batch applies none of them (batchspot/local_batch.py lists what it leaves out), so the
job definition's figures are planned offline (``batchspot.batchrules``, the plan the Batch rules
model reads) and applied here as ECS applies them on EC2: the memory as a hard limit without
swap, the vCPUs as a CPU quota, the environment, a read-only root with the tmpfs /tmp. That
the job definition asks for the read-only root and the tmpfs is asserted by
terraform/tests/batch.tftest.hcl and by the apply to moto (tests/terraform).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchspot.batchrules import render_worker_container
from batchspot.sample_data import month_csv
from tests.container.conftest import container_env, logs_of, run_container, watch_peak
from tests.integration.harness import log_events, make_stack, queue_depths, send_all

HEADROOM = 0.20  # issue 19: the peak stays at least 20 % under the job's memory
SOURCE_MIB = 48  # twice the fast path's batch budget per scan, so each reaches its steady peak


@pytest.fixture(scope="module")
def worker_container(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the rendered job definition gives each worker container by default."""
    return render_worker_container(tmp_path_factory.mktemp("job-definition"))


def _large_source(target_mib: int) -> bytes:
    """A taxi CSV of about ``target_mib`` MiB: one month's rows repeated."""
    header, _, rows = month_csv(1, 20_000).partition("\n")
    copies = max(1, (target_mib << 20) // len(rows))
    return (header + "\n" + rows * copies).encode()


def test_heaviest_default_mix_fits_the_job_definitions_memory(
    worker_container, docker_client, worker_image, batch_moto, sqs, s3
):
    """Every thread of every process busy at once: fast-path scans of large sources, their
    rows streamed to a command in each thread. No OOM kill (exit 137), and the container's
    peak from its cgroup at least 20 % under the job definition's memory."""
    memory_mib, vcpus = worker_container["memory_mib"], worker_container["vcpus"]
    job_env = worker_container["environment"]
    processes = int(job_env["WORKER_PROCESSES"])
    threads = processes * int(job_env.get("WORKER_CONCURRENCY", "4"))
    stack = make_stack(sqs, s3, visibility=300)
    keys = [f"heavy/{index}.csv" for index in range(threads // 2)]
    body = _large_source(SOURCE_MIB)
    for key in keys:
        s3.put_object(Bucket=stack.input_bucket, Key=key, Body=body)
    queries = [
        "SELECT * FROM S3Object s",
        "SELECT * FROM S3Object s WHERE CAST(s.trip_distance AS FLOAT) > 2.0",
    ]
    messages = [
        json.dumps({"bucket": stack.input_bucket, "key": key, "query": query})
        for key in keys
        for query in queries
    ]
    send_all(sqs, stack.queue_url, messages)
    env = {
        **job_env,
        **container_env(batch_moto, stack),
        "HANDLER_COMMAND": "sh examples/command/trip_stats.sh",
        "ROWS_FORMAT": "csv",
        "QUERY_ENGINE": "local",
    }
    container = run_container(
        docker_client,
        worker_image,
        env,
        memory_mib=memory_mib,
        cpus=vcpus,
        scratch_mib=worker_container["scratch_mib"],
    )

    status, peak = watch_peak(container)

    logs = logs_of(container)
    assert status == 0 and not container.attrs["State"]["OOMKilled"], logs[-3000:]
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    outcomes = [item["outcome"] for item in log_events(logs, "item")]
    assert outcomes == ["ok"] * len(messages), logs[-3000:]
    assert peak is not None, "the container's cgroup was never read"
    share = peak / (memory_mib << 20)
    print(f"peak {peak / 2**20:.0f} MiB of {memory_mib} MiB ({share:.0%}), {processes} processes")
    assert share <= 1 - HEADROOM, f"peak {peak / 2**20:.0f} MiB of {memory_mib} MiB"
    container.remove()
