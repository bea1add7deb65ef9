"""Messages this worker holds: their visibility kept alive, their deletes batched.

One background thread does both jobs, so the worker pays for neither per item:

* heartbeat: a message whose visibility would lapse within half the queue's visibility
  timeout is extended by a full timeout (``ChangeMessageVisibilityBatch``, 10 a call), so an
  item that runs longer than the timeout is never handed to a second worker meanwhile;
* acknowledgements: deletes are collected and sent 10 a call, at the latest ``ACK_DELAY``
  seconds after the first of them.

Failures are the normal case on a shared queue, so each has a rule:

* an extension that fails (the whole call, or one entry) leaves that message's deadline where
  it was, so the next tick (at most ``ACK_DELAY`` later) tries again; the deadline only moves
  when SQS said yes;
* ``ReceiptHandleIsInvalid`` or "not in flight" means the message is no longer ours (it lapsed
  and was received elsewhere): it is dropped from the ledger, and its item's outcome will find
  it gone;
* while extensions keep failing, :attr:`InFlight.healthy` turns false and the loop takes no new
  work, since it could not keep what it took;
* a delete that fails is sent again with the next batch, up to ``DELETE_TRIES`` times; if it
  never succeeds, the message comes back and its next receiver finds the result stored.

A message leaves the ledger exactly once (ack, release or loss); whatever comes later for it (a
late heartbeat, a result that finished after the worker gave the item back) is ignored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from worker.limits import MAX_BATCH_ENTRIES, chunked
from worker.logs import log

ACK_DELAY = 0.5
DELETE_TRIES = 5
# SQS refuses to keep a message invisible for more than 12 hours after it was received
# (ChangeMessageVisibility API reference).
MAX_VISIBILITY_SECONDS = 12 * 3600
# Entry errors that mean the receipt handle no longer holds the message.
GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"})


@dataclass
class _Held:
    receipt_handle: str
    deadline: float
    visible_until: float


@dataclass
class _Ack:
    message_id: str
    receipt_handle: str
    tries: int = 0


class InFlight:
    """The ledger of held messages, with the thread that keeps it honest with SQS."""

    def __init__(self, sqs: Any, queue_url: str, visibility_timeout: int) -> None:
        """Hold messages of ``queue_url``, whose visibility timeout is ``visibility_timeout``.

        ``sqs`` should have short connect and read timeouts: every extension and delete of
        the worker goes through this one thread, so one stuck call would delay them all.
        """
        self._sqs = sqs
        self._queue_url = queue_url
        self._timeout = max(1, visibility_timeout)
        self._held: dict[str, _Held] = {}
        self._acks: list[_Ack] = []
        self._first_ack_at: float | None = None
        self._failing_since: float | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._tick = max(0.1, min(self._timeout / 4, 5.0, ACK_DELAY))
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        """Start the heartbeat thread."""
        self._thread.start()

    def hold(
        self, message_id: str, receipt_handle: str, received_at: float, deadline: float
    ) -> None:
        """Track a message received at ``received_at`` (taken before the receive call).

        Its visibility is never extended past ``deadline`` (the item's), nor past SQS's 12
        hours after the receive: an item that overruns is then retried elsewhere, not held.
        """
        deadline = min(deadline, received_at + MAX_VISIBILITY_SECONDS)
        with self._lock:
            self._held[message_id] = _Held(
                receipt_handle, deadline, min(deadline, received_at + self._timeout)
            )

    def limit(self, message_id: str, deadline: float) -> None:
        """Extend the message's visibility no further than ``deadline`` from now on."""
        with self._lock:
            held = self._held.get(message_id)
            if held is not None:
                held.deadline = min(held.deadline, deadline)

    def __len__(self) -> int:
        """How many messages are held."""
        with self._lock:
            return len(self._held)

    @property
    def healthy(self) -> bool:
        """False while extensions have failed for over a quarter of the visibility timeout.

        By then a held message is close to lapsing; new work would only add to what cannot
        be kept, so the loop stops receiving until an extension succeeds again.
        """
        with self._lock:
            if not self._held:
                self._failing_since = None  # nothing left that failing extensions could lose
            since = self._failing_since
        return since is None or time.monotonic() - since < self._timeout / 4

    def ack(self, message_id: str) -> bool:
        """Schedule the message's delete; False if it was already given back or lost."""
        with self._lock:
            held = self._held.pop(message_id, None)
            if held is None:
                return False
            self._acks.append(_Ack(message_id, held.receipt_handle))
            if self._first_ack_at is None:
                self._first_ack_at = time.monotonic()
            due = len(self._acks) >= MAX_BATCH_ENTRIES
        if due:
            self.flush_acks()
        return True

    def release(self, message_ids: Iterable[str], delay: int = 0) -> list[str]:
        """Make messages visible again after ``delay`` seconds; return the ones released.

        A release that SQS refuses is not retried: the message then reappears when its
        current visibility lapses, which is at most one timeout later.
        """
        entries = []
        with self._lock:
            for message_id in message_ids:
                held = self._held.pop(message_id, None)
                if held is not None:
                    entries.append((message_id, held.receipt_handle))
        for batch in chunked(entries, MAX_BATCH_ENTRIES):
            self._change_visibility(batch, [delay] * len(batch), extending=False)
        return [message_id for message_id, _ in entries]

    def held_ids(self) -> list[str]:
        """Return the ids of the messages held right now."""
        with self._lock:
            return list(self._held)

    def flush_acks(self) -> None:
        """Delete the acknowledged messages now, 10 a call; keep failed ones for a retry."""
        with self._lock:
            acks, self._acks = self._acks, []
            self._first_ack_at = None
        retry: list[_Ack] = []
        for batch in chunked(acks, MAX_BATCH_ENTRIES):
            entries = [
                {"Id": str(i), "ReceiptHandle": ack.receipt_handle} for i, ack in enumerate(batch)
            ]
            try:
                response = self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except Exception as error:
                log("delete-failed", messages=[a.message_id for a in batch], reason=str(error))
                retry.extend(batch)
                continue
            for failure in response.get("Failed", []):
                ack = batch[int(failure["Id"])]
                log("delete-failed", message_id=ack.message_id, reason=failure)
                if failure.get("Code") not in GONE_CODES:
                    retry.append(ack)
        self._requeue(retry)

    def _requeue(self, acks: list[_Ack]) -> None:
        kept = []
        for ack in acks:
            ack.tries += 1
            if ack.tries < DELETE_TRIES:
                kept.append(ack)
            else:
                log("delete-abandoned", message_id=ack.message_id, tries=ack.tries)
        if kept:
            with self._lock:
                self._acks[:0] = kept
                self._first_ack_at = self._first_ack_at or time.monotonic()

    def close(self) -> None:
        """Stop the heartbeat and send the pending deletes, retrying failed ones briefly."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        for attempt in range(DELETE_TRIES):
            self.flush_acks()
            with self._lock:
                if not self._acks:
                    return
            time.sleep(0.2 * 2**attempt)

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
                (message_id, held, seconds)
                for message_id, held in self._held.items()
                if held.visible_until - now < self._timeout / 2
                # whole seconds, as SQS takes them, and never past the item's deadline
                and (seconds := min(self._timeout, int(held.deadline - now))) >= 1
                and now + seconds - held.visible_until >= 1
            ]
        if ack_due:
            self.flush_acks()
        for batch in chunked(lapsing, MAX_BATCH_ENTRIES):
            extended = self._change_visibility(
                [(message_id, held.receipt_handle) for message_id, held, _ in batch],
                [seconds for _, _, seconds in batch],
                extending=True,
            )
            with self._lock:
                for message_id, held, seconds in batch:
                    if message_id in extended and self._held.get(message_id) is held:
                        held.visible_until = now + seconds

    def _change_visibility(
        self, batch: list[tuple[str, str]], seconds: list[int], extending: bool
    ) -> set[str]:
        """Change up to 10 messages' visibility; return the ids SQS accepted.

        Messages SQS says are no longer ours are dropped from the ledger. When ``extending``,
        any other failure marks the heartbeat as failing until an extension fully succeeds;
        a failed give-back does not (the message left the ledger, and comes back when its
        visibility lapses).
        """
        if not batch:
            return set()
        request = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": timeout}
            for i, ((_, handle), timeout) in enumerate(zip(batch, seconds, strict=True))
        ]
        try:
            response = self._sqs.change_message_visibility_batch(
                QueueUrl=self._queue_url, Entries=request
            )
        except Exception as error:
            log("visibility-failed", messages=[m for m, _ in batch], reason=str(error))
            if extending:
                self._failing(True)
            return set()
        failed = {int(f["Id"]): f for f in response.get("Failed", [])}
        for index, failure in failed.items():
            message_id = batch[index][0]
            if failure.get("Code") in GONE_CODES:
                with self._lock:
                    self._held.pop(message_id, None)
                log("lost", message_id=message_id, reason=failure.get("Code"))
            else:
                log("visibility-failed", message_id=message_id, reason=failure)
        if extending:
            self._failing(any(f.get("Code") not in GONE_CODES for f in failed.values()))
        return {message_id for i, (message_id, _) in enumerate(batch) if i not in failed}

    def _failing(self, failed: bool) -> None:
        with self._lock:
            if not failed:
                self._failing_since = None
            elif self._failing_since is None:
                self._failing_since = time.monotonic()
