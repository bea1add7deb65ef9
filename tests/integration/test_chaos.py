"""The chaos run, CI-sized: workers SIGKILLed and SIGTERMed at random while they drain a queue.

``invoke chaos`` runs the full size (1000 items, 4 workers) and prints the same report;
``invoke chaos --aws-rules`` runs it through the AWS rules layer, as the second test does.

"The storm struck" is checked as at least one blow, which no machine speed can make flaky: the
first blow comes within 1.5 x ``interval`` = 1.5 s, and the storm lasts until the queue shows
nothing visible, which takes at least (items - workers x 8 prefetched) / (workers x 4 threads)
x 200 ms of custom code (1.6 s here) after the workers have started.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchspot.chaos import ChaosReport, ChaosSettings, run_chaos
from batchspot.emulators import Emulator

# Every kind of answer the layer gives instead of the emulator's, in this run: 403 for a
# missing key (the absent poison source always, redelivered items' result checks mostly),
# 503 SlowDown, SQS throttling and failed ChangeMessageVisibilityBatch entries.
FAULT_KINDS = {"s3.403-missing-key", "s3.slowdown", "sqs.throttled", "sqs.visibility-entry-failed"}


def assert_exactly_once(report: ChaosReport, items: int) -> None:
    """The promise: each item stored once or dead-lettered as poison, nothing left behind."""
    assert report.passed, report.render()
    assert sum(report.blows.values()) >= 1, "the storm must actually strike"
    assert (report.lost, report.duplicates, report.wrong) == (0, 0, 0)
    assert report.stored == report.versions == report.good == items
    assert (report.stranded, report.healthy_dead_lettered) == (0, 0)
    assert report.dead_lettered == report.poison


def test_random_kills_lose_nothing_and_store_nothing_twice(
    tmp_path: Path, emulator: Emulator
) -> None:
    settings = ChaosSettings(items=150, workers=3, interval=1.0, seed=7, timeout=240)
    report = run_chaos(settings, tmp_path / "workers", emulator.endpoint)
    print(report.render())

    assert_exactly_once(report, 150)


@pytest.mark.once
def test_random_kills_under_aws_rules_and_faults_lose_nothing_and_strand_nothing(
    tmp_path: Path, emulator: Emulator
) -> None:
    """The same promise with the workers behind the AWS rules layer, under the job policy.

    The rates are higher than ``invoke chaos``'s so that a run this small meets every fault
    kind (about ten SQS throttles and failed visibility entries expected, not two).
    """
    settings = ChaosSettings(
        items=120,
        workers=3,
        interval=1.0,
        seed=11,
        timeout=240,
        aws_rules=True,
        s3_slowdown_rate=0.05,
        sqs_throttle_rate=0.1,
        visibility_entry_failure_rate=0.25,
    )
    report = run_chaos(settings, tmp_path / "workers", emulator.endpoint)
    print(report.render())

    assert_exactly_once(report, 120)
    missing = {kind for kind in FAULT_KINDS if not report.injected[kind]}
    assert not missing, f"the layer never injected {sorted(missing)}\n{report.render()}"
