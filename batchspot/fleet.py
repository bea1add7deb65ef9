"""Worker processes on this machine, one per array slot, as AWS Batch runs array children.

Each child is ``python -m worker`` configured only through its environment, as in the job
definition, with its log in a file of its own. Each poll also reads the child's peak RSS
(``VmHWM``, the benchmark's memory figure) while it runs. ``ru_maxrss`` from ``wait4`` would be
wrong here: Linux carries the parent's high-water mark across fork and exec into the child's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.logs import records

ROOT = Path(__file__).resolve().parent.parent


def worker_env(
    aws_env: Mapping[str, str], queue_url: str, output_bucket: str, **settings: str
) -> dict[str, str]:
    """Return a local worker's environment: the job definition's variables on top of ours.

    The one builder for every worker this project starts on its own machine (``invoke
    local``, chaos, benchmarks, tests). ``aws_env`` says where AWS is and with what
    credentials (:meth:`batchspot.emulators.Emulator.client_env`, or a rules layer's endpoint
    on top of it); ``settings`` add or override worker variables.
    """
    return {
        **os.environ,
        **aws_env,
        "PYTHONUNBUFFERED": "1",
        # A local slot is one worker process, as the harnesses count, signal and measure it;
        # on AWS the job definition sets WORKER_PROCESSES. A setting may ask for more.
        "WORKER_PROCESSES": "1",
        "SQS_QUEUE_URL": queue_url,
        "OUTPUT_BUCKET": output_bucket,
        **settings,
    }


@dataclass
class Child:
    """One run of one array slot; a restarted slot gets a new child with the next attempt."""

    slot: int
    attempt: int
    process: subprocess.Popen[bytes]
    log: Path
    signalled: str | None = None
    exit_code: int | None = None
    peak_rss_kib: int | None = None

    def poll(self) -> bool:
        """Return whether the process has exited; while it runs, note its peak RSS so far."""
        if self.exit_code is None:
            self._note_peak_rss()
            self.exit_code = self.process.poll()
        return self.exit_code is not None

    def _note_peak_rss(self) -> None:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib or 0, int(line.split()[1]))


@dataclass
class Fleet:
    """The array job's children, started with ``env`` plus their slot and attempt."""

    env: dict[str, str]
    log_dir: Path
    command: tuple[str, ...] = (sys.executable, "-m", "worker")
    children: list[Child] = field(default_factory=list)

    def start(self, slot: int, **extra_env: str) -> Child:
        """Start (or restart, with the next attempt number) the child of ``slot``.

        ``extra_env`` is this child's own (its host's metadata endpoint, say).
        """
        attempt = 1 + sum(1 for c in self.children if c.slot == slot)
        log = self.log_dir / f"slot-{slot}-attempt-{attempt}.log"
        env = {
            **self.env,
            **extra_env,
            "AWS_BATCH_JOB_ARRAY_INDEX": str(slot),
            "AWS_BATCH_JOB_ATTEMPT": str(attempt),
        }
        with log.open("wb") as sink:
            process = subprocess.Popen(
                self.command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        child = Child(slot, attempt, process, log)
        self.children.append(child)
        return child

    def running(self) -> list[Child]:
        """Children that have not exited."""
        return [c for c in self.children if not c.poll()]

    def signal(self, child: Child, signum: signal.Signals) -> None:
        """Send ``signum`` to ``child`` and remember it (a SIGTERMed worker must exit 0)."""
        child.signalled = signum.name
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signum)

    def wait(self, timeout: float) -> bool:
        """Wait until every child has exited; False if some still run after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def kill_all(self) -> None:
        """SIGKILL whatever still runs (cleanup after a failed or interrupted run)."""
        for child in self.running():
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        self.wait(10)

    def events(self, name: str) -> Iterator[tuple[Child, dict[str, Any]]]:
        """Every log event called ``name`` from every child, killed ones included."""
        for child in self.children:
            for event in records(child.log.read_text(errors="replace").splitlines()):
                if event.get("event") == name:
                    yield child, event
