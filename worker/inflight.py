"""Messages this worker holds: their visibility kept alive, their deletes batched.

One background thread does both jobs, so the worker pays for neither per item:

* heartbeat: a message whose visibility would lapse within half the queue's visibility
  timeout is extended by a full timeout (``ChangeMessageVisibilityBatch``, 10 a call), so an
  item that runs longer than the timeout is never handed to a second worker meanwhile;
* acknowledgements: deletes are collected and sent 10 a call, at the latest ``ACK_DELAY``
  seconds after the first of them.

A message leaves the ledger exactly once (ack or release); whatever comes later for it (a
late heartbeat, a result that finished after the worker gave the item back) is ignored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from worker.logs import log

SQS_BATCH_MAX = 10
ACK_DELAY = 0.5


@dataclass
class _Held:
    receipt_handle: str
    visible_until: float


class InFlight:
    """The ledger of held messages, with the thread that keeps it honest with SQS."""

    def __init__(self, sqs: Any, queue_url: str, visibility_timeout: int) -> None:
        """Hold messages of ``queue_url``, whose visibility timeout is ``visibility_timeout``."""
        self._sqs = sqs
        self._queue_url = queue_url
        self._timeout = max(1, visibility_timeout)
        self._held: dict[str, _Held] = {}
        self._acks: list[tuple[str, str]] = []
        self._first_ack_at: float | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._tick = max(0.1, min(self._timeout / 4, 5.0, ACK_DELAY))
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        """Start the heartbeat thread."""
        self._thread.start()

    def hold(self, message_id: str, receipt_handle: str, received_at: float) -> None:
        """Track a message received at ``received_at`` (taken before the receive call)."""
        with self._lock:
            self._held[message_id] = _Held(receipt_handle, received_at + self._timeout)

    def __len__(self) -> int:
        """How many messages are held."""
        with self._lock:
            return len(self._held)

    def ack(self, message_id: str) -> bool:
        """Schedule the message's delete; False if it was already given back."""
        with self._lock:
            held = self._held.pop(message_id, None)
            if held is None:
                return False
            self._acks.append((message_id, held.receipt_handle))
            if self._first_ack_at is None:
                self._first_ack_at = time.monotonic()
            due = len(self._acks) >= SQS_BATCH_MAX
        if due:
            self.flush_acks()
        return True

    def release(self, message_ids: Iterable[str], delay: int = 0) -> list[str]:
        """Make messages visible again after ``delay`` seconds; return the ones released."""
        entries = []
        with self._lock:
            for message_id in message_ids:
                held = self._held.pop(message_id, None)
                if held is not None:
                    entries.append((message_id, held.receipt_handle))
        self._change_visibility(entries, delay)
        return [message_id for message_id, _ in entries]

    def held_ids(self) -> list[str]:
        """Return the ids of the messages held right now."""
        with self._lock:
            return list(self._held)

    def flush_acks(self) -> None:
        """Delete the acknowledged messages now, 10 a call."""
        with self._lock:
            acks, self._acks = self._acks, []
            self._first_ack_at = None
        for start in range(0, len(acks), SQS_BATCH_MAX):
            batch = acks[start : start + SQS_BATCH_MAX]
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, (_, h) in enumerate(batch)]
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except Exception as error:
                log("delete-failed", messages=[m for m, _ in batch], reason=str(error))
                continue
            for failure in response.get("Failed", []):
                log("delete-failed", message_id=batch[int(failure["Id"])][0], reason=failure)

    def close(self) -> None:
        """Stop the heartbeat and send the pending deletes."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush_acks()

    def _run(self) -> None:
        while not self._stopped.wait(self._tick):
            try:
                self._beat()
            except Exception as error:
                log("heartbeat-error", reason=str(error))

    def _beat(self) -> None:
        now = time.monotonic()
        with self._lock:
            ack_due = self._first_ack_at is not None and now - self._first_ack_at >= ACK_DELAY
            lapsing = [
                (message_id, held.receipt_handle)
                for message_id, held in self._held.items()
                if held.visible_until - now < self._timeout / 2
            ]
            for message_id, _ in lapsing:
                self._held[message_id].visible_until = now + self._timeout
        if ack_due:
            self.flush_acks()
        self._change_visibility(lapsing, self._timeout)

    def _change_visibility(self, entries: list[tuple[str, str]], seconds: int) -> None:
        for start in range(0, len(entries), SQS_BATCH_MAX):
            batch = entries[start : start + SQS_BATCH_MAX]
            request = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds}
                for i, (_, h) in enumerate(batch)
            ]
            try:
                response = self._sqs.change_message_visibility_batch(
                    QueueUrl=self._queue_url, Entries=request
                )
            except Exception as error:
                log("visibility-failed", messages=[m for m, _ in batch], reason=str(error))
                continue
            for failure in response.get("Failed", []):
                log("visibility-failed", message_id=batch[int(failure["Id"])][0], reason=failure)
