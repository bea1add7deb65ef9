"""How many messages a queue holds, read one way for the worker and the operator tasks alike.

The worker's sweeper asks it before leaving (worker/loop.py); ``status``, ``submit``,
``redrive`` and ``invoke local`` show or wait on it. The worker image cannot import the control
plane, so the one reading lives here and the control plane imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# SQS's approximate counts, in the order of QueueCounts' fields.
DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True)
class QueueCounts:
    """SQS's approximate counts for one queue (they lag the truth by up to a minute)."""

    visible: int
    in_flight: int
    delayed: int  # sent with a delay and not yet visible: neither waiting nor being worked on

    @property
    def total(self) -> int:
        """Messages not yet deleted: waiting, being worked on, or delayed."""
        return self.visible + self.in_flight + self.delayed


def queue_counts(sqs: Any, queue_url: str) -> QueueCounts:
    """Read a queue's visible, in-flight and delayed message counts (one API call)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(DEPTH_ATTRIBUTES)
    )["Attributes"]
    return QueueCounts(*(int(attributes.get(name, "0")) for name in DEPTH_ATTRIBUTES))
