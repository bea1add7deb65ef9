"""One chaos run's settings; the defaults are the issue's acceptance run."""

from __future__ import annotations

from dataclasses import dataclass

from batchspot.awsrules import Faults


@dataclass(frozen=True)
class ChaosSettings:
    """One chaos run; the defaults are the issue's acceptance run."""

    items: int = 1000
    workers: int = 4
    interval: float = 2.0  # mean seconds between blows; each gap is 0.5x to 1.5x this
    seed: int = 1
    work_ms: int = 200  # the custom code's time per item, so blows land while items run
    visibility_timeout: int = 8  # how long a SIGKILLed worker's messages stay hidden
    max_receive_count: int = 6  # every give-back on a stop counts: see the report's margin
    # RETRY_DELAY_SECONDS: a failed item waits this long before its next receive, so the run
    # has messages the workers gave back with a delay, the ones the issue found stranded.
    retry_delay: int = 2
    timeout: float = 900.0  # for the storm, until the queue shows nothing visible
    # The job definition is rendered with Batch's most attempts, so the storm can reclaim a
    # slot nine times; a child on its last attempt is spared (chaos.batch.may_strike).
    job_attempts: int = 10
    spot_warning: float = 3.0  # Spot's two-minute warning, compressed
    wave_rate: float = 0.2  # the share of reclaims that take every host at once
    aws_rules: bool = False
    # Queue the good sources as batch messages of this many items (0: one message each).
    batch_size: int = 0
    # Queue the hostile mix too. Its workers run the local engine (the one issue 11 bounds;
    # S3 Select's limits are AWS's) with this ITEM_TIMEOUT_SECONDS, instead of the default of
    # twice HANDLER_TIMEOUT (30 min), so a hostile item that held a worker would show.
    hostile: bool = False
    item_timeout: float = 60.0
    # Fault rates of the rules layer, used only with ``aws_rules``. Modest on purpose: over
    # 1000 items they still inject dozens (about 50 SlowDowns and 15 throttles), so every
    # retry path runs, while a healthy item could only fail if all 10 of botocore's attempts
    # met a fault (0.02**10), or a held message's extension failed on every heartbeat tick
    # (0.5 s) for the half visibility timeout left to it (0.05**8). Visibility entries are
    # mostly give-backs, which are few, so that rate is higher. A 409 on a result's write is
    # retried by the store a few times (worker/output.py): at 0.02 about 20 items meet one, and
    # a healthy item could only fail if all its attempts did (0.02**5).
    s3_slowdown_rate: float = 0.02
    sqs_throttle_rate: float = 0.02
    visibility_entry_failure_rate: float = 0.05
    conditional_conflict_rate: float = 0.02

    @property
    def exit_timeout(self) -> float:
        """How long workers may take to leave by themselves once nothing is visible.

        The sweeper's own cap (worker/loop.py: the longest deadline of a message + visibility
        timeout + maxReceiveCount x (visibility timeout + RETRY_DELAY_SECONDS)) for the
        messages this run queues (ITEM_TIMEOUT_SECONDS per item of a batch), plus a minute
        for idle waits, long polls and retried slots.
        """
        cap = self.item_timeout * max(1, self.batch_size) + self.visibility_timeout
        return cap + self.max_receive_count * (self.visibility_timeout + self.retry_delay) + 60.0

    def faults(self) -> Faults:
        """Return the rules layer's faults for this run, reproducible from its seed."""
        return Faults(
            s3_slowdown_rate=self.s3_slowdown_rate,
            sqs_throttle_rate=self.sqs_throttle_rate,
            visibility_entry_failure_rate=self.visibility_entry_failure_rate,
            conditional_conflict_rate=self.conditional_conflict_rate,
            seed=self.seed,
        )
