"""The heartbeat under failure: SQS answers scripted per call, the thread runs for real.

On AWS a ChangeMessageVisibilityBatch can fail whole (throttling, a dropped connection) or per
entry (``Failed``: InternalError, or ReceiptHandleIsInvalid once the message was received
elsewhere: ChangeMessageVisibilityBatch API reference). These tests pin what the ledger does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from worker.inflight import InFlight

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/work"


class ScriptedSqs:
    """Answers each call with the next scripted reply: an exception, or entry failures."""

    def __init__(self) -> None:
        self.visibility_replies: list[Any] = []
        self.delete_replies: list[Any] = []
        self.visibility_calls: list[list[str]] = []
        self.visible_until: list[float] = []
        self.delete_calls: list[list[str]] = []
        self._changed = threading.Condition()

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        now = time.monotonic()
        self.visible_until.extend(now + entry["VisibilityTimeout"] for entry in Entries)
        return self._answer(self.visibility_calls, self.visibility_replies, Entries)

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:
        return self._answer(self.delete_calls, self.delete_replies, Entries)

    def _answer(self, calls: list, replies: list, entries: list[dict]) -> dict:
        with self._changed:
            calls.append([entry["ReceiptHandle"] for entry in entries])
            reply = replies.pop(0) if replies else {}
            self._changed.notify_all()
        if isinstance(reply, Exception):
            raise reply
        failed = [
            {"Id": entry["Id"], "Code": reply[entry["ReceiptHandle"]], "SenderFault": False}
            for entry in entries
            if entry["ReceiptHandle"] in reply
        ]
        return {"Failed": failed}

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, timeout), "SQS was not called as expected"


def lapsing(inflight: InFlight, *message_ids: str, deadline: float = float("inf")) -> None:
    """Hold messages received a whole timeout ago, so the next beat must extend them."""
    for message_id in message_ids:
        inflight.hold(message_id, f"handle-{message_id}", time.monotonic() - 60, deadline)


def test_a_failed_extension_call_is_retried_on_the_next_tick() -> None:
    sqs = ScriptedSqs()
    sqs.visibility_replies = [ConnectionError("reset by peer")]
    inflight = InFlight(sqs, QUEUE, visibility_timeout=30)
    lapsing(inflight, "m1")
    inflight.start()
    # Retried at once (the deadline did not move on the failure), then extended for good.
    sqs.wait_for(lambda: len(sqs.visibility_calls) >= 2)
    inflight.close()
    assert sqs.visibility_calls[:2] == [["handle-m1"], ["handle-m1"]]
    assert len(sqs.visibility_calls) == 2, "once extended, not again for half a timeout"


def test_a_failed_entry_is_retried_and_the_others_are_not() -> None:
    sqs = ScriptedSqs()
    sqs.visibility_replies = [{"handle-m2": "InternalError"}]
    inflight = InFlight(sqs, QUEUE, visibility_timeout=30)
    lapsing(inflight, "m1", "m2")
    inflight.start()
    sqs.wait_for(lambda: len(sqs.visibility_calls) >= 2)
    inflight.close()
    assert sqs.visibility_calls == [["handle-m1", "handle-m2"], ["handle-m2"]]


def test_a_message_received_elsewhere_is_dropped_from_the_ledger() -> None:
    sqs = ScriptedSqs()
    sqs.visibility_replies = [{"handle-m1": "ReceiptHandleIsInvalid"}]
    inflight = InFlight(sqs, QUEUE, visibility_timeout=30)
    lapsing(inflight, "m1", "m2")
    inflight.start()
    sqs.wait_for(lambda: len(sqs.visibility_calls) >= 1)
    sqs.wait_for(lambda: "m1" not in inflight.held_ids())
    assert inflight.ack("m1") is False, "its item's outcome must find it gone"
    assert inflight.ack("m2") is True
    inflight.close()
    assert sqs.delete_calls == [["handle-m2"]]


def test_extensions_that_keep_failing_turn_the_worker_away_from_new_work() -> None:
    sqs = ScriptedSqs()
    sqs.visibility_replies = [ConnectionError("down")] * 1000
    inflight = InFlight(sqs, QUEUE, visibility_timeout=1)
    lapsing(inflight, "m1")
    assert inflight.healthy
    inflight.start()
    sqs.wait_for(lambda: len(sqs.visibility_calls) >= 2)
    time.sleep(0.3)  # past a quarter of the 1 s timeout since the first failure
    assert not inflight.healthy
    sqs.visibility_replies.clear()
    calls = len(sqs.visibility_calls)
    sqs.wait_for(lambda: len(sqs.visibility_calls) > calls)
    sqs.wait_for(lambda: inflight.healthy)
    inflight.close()


def test_deletes_that_fail_are_sent_again_but_not_for_gone_messages() -> None:
    sqs = ScriptedSqs()
    sqs.delete_replies = [
        {"handle-m1": "InternalError", "handle-m2": "ReceiptHandleIsInvalid"},
        ConnectionError("reset by peer"),
    ]
    inflight = InFlight(sqs, QUEUE, visibility_timeout=30)
    for message_id in ("m1", "m2", "m3"):
        inflight.hold(message_id, f"handle-{message_id}", time.monotonic(), float("inf"))
        inflight.ack(message_id)
    inflight.close()
    assert sqs.delete_calls == [
        ["handle-m1", "handle-m2", "handle-m3"],
        ["handle-m1"],
        ["handle-m1"],
    ]


def test_visibility_is_never_extended_past_the_items_deadline() -> None:
    sqs = ScriptedSqs()
    inflight = InFlight(sqs, QUEUE, visibility_timeout=30)
    deadline = time.monotonic() + 3
    lapsing(inflight, "m1", deadline=deadline)
    inflight.start()
    sqs.wait_for(lambda: len(sqs.visibility_calls) >= 1)
    time.sleep(1)  # further ticks, with the deadline closer
    inflight.close()
    assert sqs.visible_until and all(until <= deadline for until in sqs.visible_until)


def test_a_prefetched_message_is_held_no_longer_than_sqs_allows() -> None:
    """SQS refuses visibility beyond 12 hours after the receive (ChangeMessageVisibility)."""
    sqs = ScriptedSqs()
    inflight = InFlight(sqs, QUEUE, visibility_timeout=30)
    received = time.monotonic() - 12 * 3600 + 10  # 10 s of SQS's 12 hours left
    inflight.hold("m1", "handle-m1", received, float("inf"))
    inflight.start()
    sqs.wait_for(lambda: len(sqs.visibility_calls) >= 1)
    inflight.close()
    assert sqs.visible_until[0] <= received + 12 * 3600


def test_failures_that_can_lose_nothing_do_not_keep_the_worker_from_work() -> None:
    """A failed give-back, or failing extensions of messages since settled, hold nothing.

    Old behaviour: either left the heartbeat "failing" for good, so a worker holding nothing
    stopped receiving and never reached its idle exit.
    """
    sqs = ScriptedSqs()
    sqs.visibility_replies = [ConnectionError("down")] * 1000
    inflight = InFlight(sqs, QUEUE, visibility_timeout=1)
    inflight.hold("fresh", "handle-fresh", time.monotonic(), float("inf"))
    inflight.release(["fresh"], 30)
    time.sleep(0.3)  # past a quarter of the 1 s timeout since that failure
    assert inflight.healthy, "a failed give-back puts nothing held at risk"

    lapsing(inflight, "m1")
    inflight.start()
    sqs.wait_for(lambda: len(sqs.visibility_calls) >= 3)
    time.sleep(0.3)
    assert not inflight.healthy
    assert inflight.ack("m1")
    assert inflight.healthy, "nothing is held any more"
    inflight.close()
