"""`invoke status` counts messages, as SQS does; with batch messages it shows their items too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchspot import queued_items
from batchspot.status import Snapshot, snapshot
from worker.queue_depth import QueueCounts

QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/batchspot"
DLQ_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/batchspot-dlq"


class DepthsOnlySqs:
    """Answers GetQueueAttributes with fixed depths: all that status asks SQS without a job."""

    def __init__(self, depths: dict[str, tuple[int, int, int]]) -> None:
        self.depths = depths

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        values = self.depths[QueueUrl]
        return {"Attributes": {n: str(v) for n, v in zip(AttributeNames, values, strict=True)}}


def test_batch_messages_are_shown_with_the_items_they_hold():
    state = Snapshot(
        queue=QueueCounts(visible=12, in_flight=3, delayed=0),
        dead_letters=QueueCounts(visible=2, in_flight=0, delayed=0),
        job=None,
        items_per_message=100,
    )
    assert state.render().splitlines()[:2] == [
        "queue: 12 visible, 3 in flight (about 1,500 items, 100 per message as seeded)",
        "dead-letter queue: 2 message(s) (about 200 items, 100 per message as seeded)",
    ]


def test_one_item_a_message_shows_messages_alone():
    state = Snapshot(QueueCounts(12, 3, 0), QueueCounts(2, 0, 0), job=None)
    assert state.render().splitlines()[:2] == [
        "queue: 12 visible, 3 in flight",
        "dead-letter queue: 2 message(s)",
    ]


def test_status_reads_the_ratio_the_seeds_recorded_for_the_queue(tmp_path: Path):
    """Two seeds of 250 items in batches: 5 messages; 1,250 items, 250 a message."""
    queued_items.record(QUEUE_URL, 3, 750, fresh=True, state_dir=tmp_path)
    queued_items.record(QUEUE_URL, 2, 500, fresh=False, state_dir=tmp_path)
    sqs = DepthsOnlySqs({QUEUE_URL: (4, 1, 0), DLQ_URL: (0, 0, 0)})
    state = snapshot(
        sqs, None, queue_url=QUEUE_URL, dlq_url=DLQ_URL, job_id=None, state_dir=tmp_path
    )
    assert state.render().splitlines()[0] == (
        "queue: 4 visible, 1 in flight (about 1,250 items, 250 per message as seeded)"
    )
