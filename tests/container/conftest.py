"""Container tests: the worker image, built as ``invoke build --local-base`` builds it, run on
this machine's Docker engine under the limits the job definition gives it on AWS Batch.

Without an engine these tests skip, saying so; under CI (``CI`` set) such a skip fails
(tests/conftest.py), and ``.ci/run`` starts an engine first (``.ci/docker-engine.sh``).
Containers use the host's network, as CI's engine has no bridge, so they reach the emulator
on 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from batchspot.emulators import Emulator, moto_server
from tests.integration.conftest import emulator_client
from tests.integration.harness import ROOT, Stack

INVOKE = Path(sys.executable).parent / "invoke"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this folder's tests ``container``."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """The Docker engine, or a skip that names what is missing."""
    from batchspot.image import ImageError, engine

    try:
        client = engine()
        client.ping()
    except ImageError as error:
        pytest.skip(f"needs a Docker engine: {error}")
    except Exception as error:  # the SDK connects lazily: ping is the first call
        pytest.skip(f"needs a Docker engine: {type(error).__name__}: {error}")
    return client


@pytest.fixture(scope="session")
def batch_moto(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Emulator]:
    """moto's server with Batch running every job as a container, on the host's network."""
    with moto_server(tmp_path_factory.mktemp("moto-logs"), batch_containers=True) as running:
        yield running


@pytest.fixture(scope="session")
def s3(batch_moto: Emulator) -> Any:
    """S3 on the session's moto."""
    return emulator_client(batch_moto, "s3")


@pytest.fixture(scope="session")
def sqs(batch_moto: Emulator) -> Any:
    """SQS on the session's moto."""
    return emulator_client(batch_moto, "sqs")


def built_image(output: str) -> str:
    """The image a build's output names (``built batchspot-worker:<tag>``)."""
    match = re.search(r"^built (batchspot-worker:\S+)$", output, flags=re.MULTILINE)
    assert match, output[-2000:]
    return match[1]


def container_env(emulator: Emulator, stack: Stack, **settings: str) -> dict[str, str]:
    """A container's environment: where AWS is, the stack, the settings; nothing of the host."""
    return {
        **emulator.client_env(),
        "SQS_QUEUE_URL": stack.queue_url,
        "OUTPUT_BUCKET": stack.output_bucket,
        "IDLE_EXIT_SECONDS": "2",
        "RETRY_DELAY_SECONDS": "0",
        **settings,
    }


def run_container(
    client: Any,
    image: str,
    env: Mapping[str, str],
    *,
    memory_mib: int | None = None,
    cpus: float | None = None,
    scratch_mib: int = 256,
    command: list[str] | None = None,
) -> Any:
    """Start the image detached, as AWS Batch starts a job definition's container on EC2.

    Read-only root filesystem with a tmpfs ``/tmp`` (``readonlyRootFilesystem`` and
    ``linuxParameters.tmpfs``), an init as PID 1 (``initProcessEnabled``), the image's own
    non-root user, the job's memory as a hard limit without swap, and its vCPUs as a CPU quota.
    """
    limits: dict[str, Any] = {}
    if memory_mib:
        limits |= {"mem_limit": f"{memory_mib}m", "memswap_limit": f"{memory_mib}m"}
    if cpus:
        limits["nano_cpus"] = int(cpus * 1e9)
    return client.containers.run(
        image,
        command=command,
        environment=dict(env),
        network_mode="host",
        read_only=True,
        tmpfs={"/tmp": f"rw,nosuid,nodev,mode=1777,size={scratch_mib}m"},
        init=True,
        detach=True,
        **limits,
    )


def wait_exit(container: Any, timeout: float = 180) -> int:
    """Wait for the container to exit; return its status code (the container is kept)."""
    return int(container.wait(timeout=timeout)["StatusCode"])


def logs_of(container: Any) -> str:
    """Everything the container printed."""
    return container.logs(stdout=True, stderr=True).decode(errors="replace")


def cgroup_peak_bytes(container_id: str) -> int | None:
    """The container's memory high-water mark from its cgroup (v2 ``memory.peak``, v1
    ``memory.max_usage_in_bytes``), or None once the cgroup is gone."""
    candidates = [
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}/memory.max_usage_in_bytes"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.peak"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/memory.peak"),
    ]
    for path in candidates:
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def watch_peak(container: Any, timeout: float = 200) -> tuple[int, int | None]:
    """Follow the container to its exit; return (exit status, last cgroup peak read)."""
    peak = None
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        if container.status in ("exited", "dead"):
            return int(container.attrs["State"]["ExitCode"]), peak
        peak = cgroup_peak_bytes(container.id) or peak
        assert time.monotonic() < deadline, f"container still running after {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def worker_image(docker_client: Any) -> str:
    """The image ``invoke build --local-base`` builds from this checkout (layers cached).

    A lock keeps two xdist workers from making the same base at once.
    """
    with Path(tempfile.gettempdir(), "batchspot-image-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [str(INVOKE), "build", "--local-base"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^base: batchspot-base:bookworm-[0-9a-f]{12}$", result.stdout, re.M)
    return built_image(result.stdout)
