"""Move dead letters back to the work queue, once their cause is fixed.

SQS's own StartMessageMoveTask does this server-side, at a controlled rate, and is used where
the endpoint offers it. Where it does not (some emulators, older partitions), messages are
moved by hand: received from the dead-letter queue, sent to the work queue, and deleted from
the dead-letter queue only once the send succeeded, so a failure duplicates a message at worst
(which the worker's first-writer-wins output absorbs) and never loses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from batchspot.aws import queue_arn
from worker.errors import error_code
from worker.limits import MAX_BATCH_ENTRIES
from worker.queue_depth import queue_counts

RECEIVE_WAIT_SECONDS = 1  # a short long-poll: an empty answer then means the DLQ is drained
MOVE_VISIBILITY_SECONDS = 60  # time to send and delete a received batch
# What an endpoint answers when it lacks StartMessageMoveTask (moto answers a bare 500).
UNSUPPORTED_CODES = frozenset(
    {"UnsupportedOperation", "InvalidAction", "UnknownOperationException"}
)


@dataclass(frozen=True)
class RedriveReport:
    """What a redrive did."""

    method: str  # "move task" or "receive/send/delete"
    moved: int
    failed: int
    task_handle: str | None = None

    def summary(self) -> str:
        """One line for the operator."""
        if self.task_handle:
            return (
                f"started an SQS message move task for {self.moved} messages "
                f"(handle {self.task_handle}); SQS moves them in the background"
            )
        return f"moved {self.moved} messages back by {self.method}, {self.failed} failed"


def _unsupported(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return error_code(error) in UNSUPPORTED_CODES or status >= 500


def redrive(
    sqs: Any,
    *,
    dlq_url: str,
    queue_url: str,
    max_messages: int | None = None,
    rate_per_second: int | None = None,
) -> RedriveReport:
    """Move the dead-letter queue's messages back to the work queue.

    ``max_messages`` bounds a hand move (a move task always moves everything);
    ``rate_per_second`` throttles a move task (SQS's MaxNumberOfMessagesPerSecond).
    """
    if max_messages is None:
        waiting = queue_counts(sqs, dlq_url).visible
        request: dict[str, Any] = {
            "SourceArn": queue_arn(sqs, dlq_url),
            "DestinationArn": queue_arn(sqs, queue_url),
        }
        if rate_per_second:
            request["MaxNumberOfMessagesPerSecond"] = rate_per_second
        try:
            handle = sqs.start_message_move_task(**request)["TaskHandle"]
        except ClientError as error:
            if not _unsupported(error):
                raise
        else:
            return RedriveReport("move task", moved=waiting, failed=0, task_handle=handle)
    return move_by_hand(sqs, dlq_url=dlq_url, queue_url=queue_url, max_messages=max_messages)


def move_by_hand(
    sqs: Any, *, dlq_url: str, queue_url: str, max_messages: int | None = None
) -> RedriveReport:
    """Receive, send, then delete, ten at a time, until the DLQ answers empty."""
    moved = failed = 0
    while max_messages is None or moved + failed < max_messages:
        wanted = (
            MAX_BATCH_ENTRIES
            if max_messages is None
            else min(MAX_BATCH_ENTRIES, max_messages - moved - failed)
        )
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
            VisibilityTimeout=MOVE_VISIBILITY_SECONDS,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        by_id = {str(index): message for index, message in enumerate(messages)}
        entries = []
        for entry_id, message in by_id.items():
            entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = message["MessageAttributes"]
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent = [by_id[s["Id"]] for s in response.get("Successful", [])]
        # Failed sends stay in the DLQ and reappear after the visibility timeout.
        failed += len(response.get("Failed", []))
        if sent:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)
                ],
            )
        moved += len(sent)
    return RedriveReport("receive/send/delete", moved=moved, failed=failed)
