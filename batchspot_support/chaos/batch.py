"""AWS Batch's side of a chaos run: Spot reclaims as Spot makes them, retries as Batch makes them.

A reclaim is a notice on the host's instance metadata (``batchspot_support.imds``), then,
after the two-minute warning (compressed to ``warning`` seconds), the host gone: its child is
SIGKILLed. No SIGTERM comes in between: ECS does not drain standalone tasks, which Batch jobs
are. Every child that ends, struck or not, is judged by :mod:`batchspot.batchrules` for the
job definition Terraform renders, and its slot gets a next attempt only when that says RETRY,
never beyond ``attempts``.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from batchspot.batchrules import BatchRules, ChildEnd, Decision
from batchspot.fleet import Child, Fleet
from batchspot_support.imds import InstanceMetadata


@dataclass
class BatchSide:
    """Reclaims hosts, and ends and retries children as Batch would."""

    rules: BatchRules
    imds: InstanceMetadata
    warning: float
    spot_notice_interval: float = 0.2
    ends: Counter[str] = field(default_factory=Counter)  # "end -> decision" lines
    decisions: Counter[str] = field(default_factory=Counter)
    reclaimed_slots: Counter[int] = field(default_factory=Counter)
    _kill_at: dict[int, float] = field(default_factory=dict)  # by id(child)
    _judged: set[int] = field(default_factory=set)

    def start(self, fleet: Fleet, slot: int) -> Child:
        """Start the slot's next attempt on a fresh host with its own metadata."""
        attempt = 1 + sum(1 for c in fleet.children if c.slot == slot)
        return fleet.start(
            slot,
            AWS_EC2_METADATA_SERVICE_ENDPOINT=self.imds.endpoint(f"slot-{slot}-{attempt}"),
            SPOT_NOTICE_INTERVAL=f"{self.spot_notice_interval:g}",
        )

    def may_strike(self, child: Child) -> bool:
        """Whether a reclaim of ``child`` leaves its slot an attempt to be retried on.

        A child on its last attempt is spared: its reclaim would fail the array child, and
        with it the job, which is Batch's documented end rather than a question for the run.
        """
        return id(child) not in self._kill_at and child.attempt < self.rules.attempts

    def reclaim(self, child: Child) -> None:
        """Give ``child``'s host its interruption notice; the host goes after the warning."""
        self.imds.notify(f"slot-{child.slot}-{child.attempt}", self.warning)
        self._kill_at[id(child)] = time.monotonic() + self.warning
        self.reclaimed_slots[child.slot] += 1

    def tick(self, fleet: Fleet) -> bool:
        """Take hosts whose warning is over; judge children that ended; start the retries.

        Returns whether a child is still to be taken or retried.
        """
        now = time.monotonic()
        for child in fleet.children:
            kill_at = self._kill_at.get(id(child))
            if kill_at is not None and kill_at <= now and child.signalled is None:
                fleet.signal(child, signal.SIGKILL)
        pending = False
        for child in list(fleet.children):
            if id(child) in self._judged or not child.poll():
                pending = pending or (id(child) in self._kill_at and child.signalled is None)
                continue
            self._judged.add(id(child))
            decision = self._judge(child)
            if decision == "RETRY":
                self.start(fleet, child.slot)
                pending = True
        return pending

    def _judge(self, child: Child) -> Decision:
        if id(child) in self._kill_at and child.signalled:
            end = ChildEnd.host_terminated(f"i-{child.process.pid:017x}")
            label = "Host EC2 (instance i-…) terminated."
        else:
            end = ChildEnd.exited(child.exit_code if child.exit_code is not None else -1)
            label = end.describe()
        decision = self.rules.decide(end, child.attempt)
        self.ends[f"{label} -> {decision}"] += 1
        self.decisions[decision] += 1
        return decision

    def failed_slots(self, fleet: Fleet) -> list[int]:
        """Slots whose last attempt Batch did not record as SUCCEEDED."""
        latest = {child.slot: child for child in fleet.children}
        return sorted(
            slot
            for slot, child in latest.items()
            if id(child) in self._kill_at or child.exit_code != 0
        )
