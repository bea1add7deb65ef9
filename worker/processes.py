"""``WORKER_PROCESSES``: one worker process per vCPU the container is given.

A worker is one Python process whose threads share one GIL, so CPU-bound items (the local
query engine, serialisation, a Python handler) use about one vCPU however many the job pays
for. ``python -m worker`` therefore starts N independent workers, each the ordinary worker
with its own loop, heartbeat, clients and ``WORKER_CONCURRENCY`` threads. Independent
processes keep every guarantee as it is: a message is held, extended and settled by the one
process that received it, exactly as between two array children.

The supervisor here does only what makes N processes one container: it forwards SIGTERM and
SIGINT, lets only process 0 be the sweeper (see :mod:`worker.loop`), and exits with the worst
status, once all have exited.

``auto`` sizes N from the cgroup's CPU quota (cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), as Fargate and ``docker run --cpus`` set it,
else from the CPUs the process may run on. On Batch over EC2 a container gets CPU *shares*,
not a quota, and would see the whole host: the job definition therefore sets
``WORKER_PROCESSES`` to the job's vCPUs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from worker.logs import log
from worker.stopping import StopSignal

# Set in each worker process's environment: its number among the container's processes.
PROCESS_INDEX_VARIABLE = "WORKER_PROCESS_INDEX"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# A process killed by a signal reports -N; shells and Batch report 128 + N.
SIGNAL_EXIT_BASE = 128
# prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
WORKER_COMMAND = (sys.executable, "-m", "worker")


def cgroup_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """Return the CPUs the cgroup's quota allows (``200000 100000`` is 2.0); None: no quota."""
    v2 = root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or "100000")
    for directory in (root / "cpu", root / "cpu,cpuacct"):
        quota_file = directory / "cpu.cfs_quota_us"
        if quota_file.is_file():
            quota = int(quota_file.read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 else quota / period
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> tuple[int, str]:
    """How many worker processes ``auto`` starts, and where the figure came from.

    The quota's whole CPUs (at least one: half a CPU still runs one process), capped by the
    CPUs this process may run on.
    """
    usable = len(os.sched_getaffinity(0))
    quota = cgroup_cpus(root)
    if quota is None:
        return usable, f"{usable} CPUs in the affinity mask, no cgroup CPU quota"
    return max(1, min(usable, int(quota))), f"cgroup CPU quota of {quota:g} CPUs"


def peak_rss_mib() -> float | None:
    """Return the process's peak resident memory (``VmHWM``) in MiB; None if /proc cannot say.

    Not ``ru_maxrss``: Linux carries a parent's high-water mark into a forked child.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def supervise(count: int, stop: StopSignal, command: Sequence[str] = WORKER_COMMAND) -> int:
    """Run ``count`` worker processes (``command``) to their end; return the worst status.

    A SIGTERM or SIGINT is passed to every process; each then stops as a single worker does
    (finishes within the grace period, gives back the rest). A process that the forwarded
    signal ended before it could install its own handler held nothing, and counts as stopped.
    """
    children: list[subprocess.Popen[bytes]] = []

    def forward(number: int, _frame: FrameType | None) -> None:
        stop.set(signal.Signals(number).name)
        for child in children:
            child.send_signal(number)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(count):
        if stop.is_set():
            break
        env = {**os.environ, "WORKER_PROCESSES": "1", PROCESS_INDEX_VARIABLE: str(index)}
        children.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_supervisor))
    if stop.is_set():  # the signal may have come between a start and its listing
        for child in children:
            child.send_signal(signal.SIGTERM)
    statuses = [_status(child.wait(), stop) for child in children]
    log("processes-done", statuses=statuses)
    return max(statuses, default=0)


def _die_with_supervisor() -> None:
    """In a new worker process: be SIGKILLed if the supervisor is.

    In a container that is what happens anyway (the whole container is killed); run anywhere
    else, a SIGKILLed ``python -m worker`` must not leave workers behind either.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _status(code: int, stop: StopSignal) -> int:
    if code < 0:
        if stop.is_set() and -code in (signal.SIGTERM, signal.SIGINT):
            return 0
        return SIGNAL_EXIT_BASE - code
    return code
