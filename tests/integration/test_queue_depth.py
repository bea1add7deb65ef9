"""Queue depth, read one way by the worker's sweeper and by status, submit, redrive and local."""

from __future__ import annotations

import uuid

from tests.integration.harness import send_all, wait_until
from worker.queue_depth import QueueCounts, queue_counts


def test_visible_in_flight_and_delayed_messages_are_told_apart(sqs) -> None:
    # Three different counts, so a count read into the wrong field shows.
    queue_url = sqs.create_queue(QueueName=f"depth-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    send_all(sqs, queue_url, [f"now {i}" for i in range(5)])
    sqs.send_message(QueueUrl=queue_url, MessageBody="later", DelaySeconds=900)
    held: list[str] = []
    while len(held) < 2:
        held += [
            message["MessageId"]
            for message in sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=2 - len(held), VisibilityTimeout=900
            ).get("Messages", [])
        ]

    expected = QueueCounts(visible=3, in_flight=2, delayed=1)
    wait_until(
        lambda: queue_counts(sqs, queue_url) == expected,
        f"{expected} (last read {queue_counts(sqs, queue_url)})",
    )
    assert queue_counts(sqs, queue_url).total == 6
