"""The chaos run, CI-sized: workers SIGKILLed and SIGTERMed at random while they drain a queue.

``invoke chaos`` runs the full size (1000 items, 4 workers) and prints the same report.
"""

from __future__ import annotations

from pathlib import Path

from batchspot.chaos import ChaosSettings, run_chaos
from batchspot.emulators import Emulator


def test_random_kills_lose_nothing_and_store_nothing_twice(
    tmp_path: Path, emulator: Emulator
) -> None:
    settings = ChaosSettings(items=150, workers=3, interval=1.0, seed=7, timeout=240)
    report = run_chaos(settings, tmp_path / "workers", emulator.endpoint)
    print(report.render())

    assert report.passed, report.render()
    assert sum(report.blows.values()) >= 2, "the storm must actually strike"
    assert (report.lost, report.duplicates, report.wrong) == (0, 0, 0)
    assert report.stored == report.versions == report.good == 150
    assert report.dead_lettered == report.poison
