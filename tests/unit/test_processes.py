"""WORKER_PROCESSES: how many worker processes a container runs, from its CPU quota or setting."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from worker import processes
from worker.config import ConfigError, load_config
from worker.processes import available_cpus, supervise
from worker.stopping import StopSignal

BASE_ENV = {"SQS_QUEUE_URL": "https://sqs/q", "OUTPUT_BUCKET": "out"}


@pytest.fixture
def eight_cpus(monkeypatch) -> None:
    """The process may run on eight CPUs, whatever this machine has."""
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: set(range(8)))


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, directory: str, quota: int, period: int = 100000) -> Path:
    (root / directory).mkdir(parents=True)
    (root / directory / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / directory / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("200000 100000", 2), ("150000 100000", 1), ("50000 100000", 1), ("1600000 100000", 8)],
)
def test_cgroup_v2_quota_sets_the_processes(tmp_path: Path, cpu_max: str, expected: int) -> None:
    count, reason = available_cpus(cgroup_v2(tmp_path, cpu_max))
    assert count == expected
    assert "cgroup CPU quota" in reason


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize("directory", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota_sets_the_processes(tmp_path: Path, directory: str) -> None:
    assert available_cpus(cgroup_v1(tmp_path / "a", directory, 300000))[0] == 3
    assert available_cpus(cgroup_v1(tmp_path / "b", directory, 50000, 25000))[0] == 2


@pytest.mark.usefixtures("eight_cpus")
def test_without_a_quota_the_affinity_mask_counts(tmp_path: Path) -> None:
    assert available_cpus(cgroup_v2(tmp_path / "v2", "max 100000"))[0] == 8
    assert available_cpus(cgroup_v1(tmp_path / "v1", "cpu", -1))[0] == 8
    count, reason = available_cpus(tmp_path / "no-cgroup-files")
    assert count == 8
    assert "no cgroup CPU quota" in reason


def test_worker_processes_setting(monkeypatch) -> None:
    monkeypatch.setattr("worker.config.available_cpus", lambda: (3, "test"))
    assert load_config(BASE_ENV).processes == 3  # auto by default
    assert load_config({**BASE_ENV, "WORKER_PROCESSES": "AUTO"}).processes == 3
    assert load_config({**BASE_ENV, "WORKER_PROCESSES": "2"}).processes == 2
    for bad in ("0", "two", "1.5", "-1"):
        with pytest.raises(ConfigError, match="WORKER_PROCESSES must be auto or a whole number"):
            load_config({**BASE_ENV, "WORKER_PROCESSES": bad})


@pytest.fixture
def own_signal_handlers():
    """The supervisor installs its own SIGTERM/SIGINT handlers: give pytest's back after."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


@pytest.mark.usefixtures("own_signal_handlers")
def test_the_supervisor_exits_with_its_processes_worst_status() -> None:
    # Process i exits with 2i; a process killed by a signal counts as 128 + the signal.
    assert supervise(3, StopSignal(), ("sh", "-c", "exit $((WORKER_PROCESS_INDEX * 2))")) == 4
    killed = ("sh", "-c", '[ "$WORKER_PROCESS_INDEX" = 1 ] && kill -KILL $$; exit 3')
    assert supervise(2, StopSignal(), killed) == 128 + signal.SIGKILL


@pytest.mark.usefixtures("own_signal_handlers")
def test_a_stop_before_the_start_starts_nothing() -> None:
    stop = StopSignal()
    stop.set("SIGTERM")
    assert supervise(2, stop, ("sh", "-c", "exit 9")) == 0
