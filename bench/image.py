"""The worker image's size and start-up time: seconds from ``docker run`` to the first item
received.

The image is the one ``invoke build --local-base`` builds from this checkout (or ``--image``).
Each run starts a container as the job definition does (``WORKER_PROCESSES=2``, read-only
root, tmpfs /tmp, init) against moto's server on the host's network, with one message on a
fresh queue, and times from the run call to the moment SQS counts that message in flight: the
worker has imported its code, read its configuration, checked the queue and bucket, and
received. Medians of ``--runs`` starts.

    python bench/image.py [--runs 5] [--image batchspot-worker:<tag>]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchspot import image  # noqa: E402
from batchspot.emulators import moto_server  # noqa: E402
from tests.container.conftest import container_env, run_container  # noqa: E402
from tests.integration.harness import make_stack, put_sources, queue_depths, send_all  # noqa: E402


def seconds_to_first_receive(client: object, name: str, emulator: object) -> float:
    """Start one container on a queue holding one message; time until it is received."""
    sqs, s3 = emulator.client("sqs"), emulator.client("s3")  # type: ignore[attr-defined]
    stack = make_stack(sqs, s3)
    send_all(sqs, stack.queue_url, put_sources(s3, stack, 1))
    env = container_env(emulator, stack, WORKER_PROCESSES="2", HANDLER_COMMAND="sleep 30")  # type: ignore[arg-type]
    started = time.monotonic()
    container = run_container(client, name, env, cpus=2)
    try:
        while queue_depths(sqs, stack.queue_url) != (0, 1):
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        container.remove(force=True)


def main() -> None:
    """Print the image's size and its median start-up time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default="")
    args = parser.parse_args()
    name = args.image or image.build_checkout(local_base=True, stream=False, emit=lambda _: None)
    client = image.engine()
    size_mb = client.images.get(name).attrs["Size"] / 1e6
    with tempfile.TemporaryDirectory() as logs, moto_server(Path(logs)) as emulator:
        times = [seconds_to_first_receive(client, name, emulator) for _ in range(args.runs)]
    venv = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "du", name, "-sm", "/opt/venv"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    print(f"image:                {name}")
    print(f"size:                 {size_mb:.0f} MB (its /opt/venv: {venv} MB)")
    print(
        f"docker run -> first item received: median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}, {args.runs} runs, WORKER_PROCESSES=2)"
    )


if __name__ == "__main__":
    main()
