"""The project's own checks behind ``invoke test``, ``invoke test-local`` and ``invoke lint``.

Each returns the exit status of the tool it runs, so the task can pass it on unchanged.
``test-local`` runs the integration suite against LocalStack instead of moto: the one already
listening on the docker-compose port when there is one, else one started natively here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from batchspot.emulators import EmulatorError, emulator_at

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".batchspot" / "logs"
COMPOSE_ENDPOINT = "http://127.0.0.1:4566"  # docker-compose.localstack.yml publishes this
NO_TESTS_COLLECTED = 5  # pytest's exit status when nothing matched


def run_pytest(args: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run pytest from the project root with this interpreter; return its exit status."""
    command = [sys.executable, "-m", "pytest", *args]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


# Test files run on two pytest-xdist workers, each file whole on one (its module fixtures,
# such as an applied stack, are built once). The suite mostly waits on emulators, workers and
# Terraform: serially it spent 13 of its 30 minutes on the CPU.
PARALLEL = ("--numprocesses", "4", "--dist", "loadfile")
# ``-rs`` lists every skip with its reason, so a suite that shrank is seen, not guessed;
# ``--durations`` names the slowest tests, where a CI budget is won or lost.
REPORT = ("-rs", "--durations", "10")


def run_tests(args: Sequence[str] = ()) -> int:
    """Run the unit and integration suites; the integration tests start their own moto."""
    return run_pytest([*PARALLEL, *REPORT, *(args or ["tests"])])


def run_tests_on_localstack(args: Sequence[str] = (), endpoint: str = COMPOSE_ENDPOINT) -> int:
    """Run the integration suite on LocalStack, minus the tests that need moto's extras.

    Tests marked ``once`` are left out too: they test the worker against AWS's rules (the
    rules layer supplies them, whatever emulator is beneath) or against hostile input, which
    a second emulator would only repeat.

    Raises :class:`EmulatorError` when no LocalStack can be reached or started, and treats
    "no tests collected" as a failure, so this never reports success without having tested.
    """
    with emulator_at(endpoint, LOG_DIR, "localstack", start_if_absent=True) as emulator:
        print(f"integration tests on {emulator.name} at {emulator.endpoint}", file=sys.stderr)
        env = {
            **os.environ,
            "BATCHSPOT_TEST_EMULATOR": "localstack",
            "BATCHSPOT_LOCALSTACK_ENDPOINT": emulator.endpoint,
        }
        status = run_pytest(
            [*PARALLEL, *REPORT, "tests/integration", "-m", "not moto_only and not once", *args],
            env,
        )
    if status == NO_TESTS_COLLECTED:
        raise EmulatorError("no integration tests ran against LocalStack (none were collected)")
    return status


def run_lint(fix: bool = False) -> int:
    """Run ruff's linter, then its formatter in check mode (both fix things with ``fix``)."""
    ruff = [sys.executable, "-m", "ruff"]
    check = [*ruff, "check", *(["--fix"] if fix else []), "."]
    fmt = [*ruff, "format", *([] if fix else ["--check"]), "."]
    statuses = [subprocess.run(cmd, cwd=ROOT, check=False).returncode for cmd in (check, fmt)]
    return max(statuses)
