"""How many messages a queue holds, read one way for the worker and the operator tasks alike.

The worker's sweeper asks it before leaving (worker/loop.py); ``status``, ``submit``,
``redrive`` and ``invoke local`` show or wait on it. The worker image cannot import the control
plane, so the one reading lives here and the control plane imports it.

SQS counts messages, and a batch message names up to ``MAX_BATCH_ITEMS`` items: what the
messages hold in items is said one way too (:func:`held_items`), by ``invoke status`` and by
the final step, which ``invoke submit`` tells the seeds' ratio
(:data:`ITEMS_PER_MESSAGE_VARIABLE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.messages import MAX_BATCH_ITEMS

# The final job's environment: the items a message of the work queue names, as seeded
# (``batchspot.queued_items``); ``invoke submit`` sets it, since the job cannot see the seeds.
ITEMS_PER_MESSAGE_VARIABLE = "QUEUED_ITEMS_PER_MESSAGE"

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


def held_items(messages: int, items_per_message: float | None) -> str:
    """Return what ``messages`` hold in items, in parentheses; ``""`` at one item a message.

    ``items_per_message`` is the ratio the seeds recorded; None where it is not known, and
    then only the bound is said.
    """
    if items_per_message is None:
        return f" (each holds 1 to {MAX_BATCH_ITEMS:,} items)"
    if items_per_message == 1:
        return ""
    return (
        f" (about {round(messages * items_per_message):,} items, "
        f"{round(items_per_message, 1):,g} per message as seeded)"
    )
