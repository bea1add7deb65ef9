"""The worker loop: receive in tens, process with bounded concurrency, settle every message.

The loop receives 10 messages per call (long polling) whenever fewer items are pending than
there are worker threads, so receives cost 0.1 call per item; the messages waiting their turn
are held by the heartbeat like the running ones. It ends when the queue has stayed empty for
``IDLE_EXIT_SECONDS`` or when asked to stop, and never loses a message on the way out: what is
not finished within the grace period is given back at once.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from worker.config import Config
from worker.inflight import SQS_BATCH_MAX, InFlight
from worker.logs import log
from worker.metrics import CallCounter
from worker.process import Outcome, Services, process_message
from worker.stopping import StopSignal

EXIT_OK = 0
EXIT_STUCK = 3


@dataclass
class Tally:
    """Items by outcome, for the summary line."""

    ok: int = 0
    already_done: int = 0
    ignored: int = 0
    failed: int = 0
    released: int = 0

    @property
    def settled(self) -> int:
        """Messages this worker finished with, one way or another."""
        return self.ok + self.already_done + self.ignored + self.failed


class Worker:
    """Drains one queue until it stays empty or the worker is asked to stop."""

    def __init__(
        self,
        config: Config,
        sqs: Any,
        services: Services,
        inflight: InFlight,
        stop: StopSignal,
        counter: CallCounter,
        max_receive_count: int | None,
    ) -> None:
        """Wire the loop to its collaborators (built by ``worker.__main__``)."""
        self._config = config
        self._sqs = sqs
        self._services = services
        self._inflight = inflight
        self._stop = stop
        self._counter = counter
        self._max_receive_count = max_receive_count
        self._retry_delay = int(config.retry_delay_seconds)
        self.tally = Tally()
        self._tally_lock = threading.Lock()

    def run(self) -> int:
        """Run until idle or stopped; return the process exit code."""
        started = time.monotonic()
        pending: dict[Future[None], str] = {}
        exit_code = EXIT_OK
        idle_since = time.monotonic()
        self._inflight.start()
        pool = ThreadPoolExecutor(self._config.concurrency, thread_name_prefix="item")
        try:
            while not self._stop.is_set():
                pending = {f: m for f, m in pending.items() if not f.done()}
                if self._handler_abandoned() >= self._config.concurrency:
                    log("stuck", reason="custom code hung past HANDLER_TIMEOUT in every slot")
                    self._stop.set("custom code hung in every worker thread")
                    exit_code = EXIT_STUCK
                    break
                if len(pending) >= self._config.concurrency:
                    wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    continue
                if pending:
                    idle_since = time.monotonic()
                idle_left = self._config.idle_exit_seconds - (time.monotonic() - idle_since)
                if not pending and idle_left <= 0:
                    log("idle", seconds=self._config.idle_exit_seconds)
                    break
                messages = self._receive(self._wait_time(idle_left, bool(pending)))
                if self._stop.is_set():
                    self._give_back([m["MessageId"] for m in messages], "stopping")
                    break
                if messages:
                    idle_since = time.monotonic()
                for message in messages:
                    pending[pool.submit(self._handle, message)] = message["MessageId"]
            if self._stop.is_set():
                self._wind_down(pending)
        finally:
            # Never wait for threads here: what did not finish in the grace period was given
            # back, and the process exits without it.
            pool.shutdown(wait=False, cancel_futures=True)
        self._inflight.close()
        self._summary(time.monotonic() - started, exit_code)
        return exit_code

    def _wait_time(self, idle_left: float, busy: bool) -> int:
        """Long-poll as long as allowed, but not past the idle deadline when nothing runs."""
        budget = self._config.idle_exit_seconds if busy else idle_left
        return max(0, min(self._config.wait_time_seconds, int(budget + 0.999)))

    def _receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        received_at = time.monotonic()
        try:
            response = self._sqs.receive_message(
                QueueUrl=self._config.queue_url,
                MaxNumberOfMessages=SQS_BATCH_MAX,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except Exception as error:
            log("receive-failed", reason=str(error))
            self._stop.wait(1.0)
            return []
        messages = response.get("Messages", [])
        for message in messages:
            self._inflight.hold(message["MessageId"], message["ReceiptHandle"], received_at)
        return messages

    def _handle(self, message: dict[str, Any]) -> None:
        """Process one message in a worker thread and settle it."""
        message_id = message["MessageId"]
        if self._stop.is_set():
            return  # left for _wind_down to give back
        try:
            attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            outcome = process_message(message["Body"], attempt, self._config, self._services)
            self._settle(message_id, attempt, outcome)
        except Exception as error:
            log("item-error", message_id=message_id, reason=f"{type(error).__name__}: {error}")
            self._inflight.release([message_id], self._retry_delay)

    def _settle(self, message_id: str, attempt: int, outcome: Outcome) -> None:
        if outcome.kind == "failed":
            delay = 0 if outcome.permanent else self._retry_delay
            settled = bool(self._inflight.release([message_id], delay))
            last = self._max_receive_count is not None and attempt >= self._max_receive_count
            outcome.fields["next"] = "dead-letter queue" if last else f"retry in {delay} s"
        else:
            settled = self._inflight.ack(message_id)
        if not settled:
            # Given back while stopping: the next receiver owns the message. A result stored
            # meanwhile stays (and is found by that receiver), so it is still logged.
            outcome.fields["given_back_before_settling"] = True
        with self._tally_lock:
            name = outcome.kind.replace("-", "_")
            setattr(self.tally, name, getattr(self.tally, name) + 1)
        log(
            "item",
            message_id=message_id,
            outcome=outcome.kind,
            reason=outcome.reason,
            attempt=attempt,
            **outcome.fields,
        )

    def _wind_down(self, pending: dict[Future[None], str]) -> None:
        """Give back what has not started, let the rest finish within the grace period."""
        not_started = [m for f, m in pending.items() if f.cancel()]
        self._give_back(not_started, "not started")
        running = {f: m for f, m in pending.items() if not f.cancelled()}
        deadline = (self._stop.at or time.monotonic()) + self._config.stop_grace_seconds
        _, unfinished = wait(running, timeout=max(0.0, deadline - time.monotonic()))
        self._give_back([running[f] for f in unfinished], "grace period over")
        kill_all = getattr(self._services.handler, "kill_all", None)
        if unfinished and kill_all:
            kill_all()
        # Anything still held (e.g. received by a poll that returned during the stop).
        self._give_back(self._inflight.held_ids(), "stopping")

    def _give_back(self, message_ids: list[str], why: str) -> None:
        released = self._inflight.release(message_ids, 0)
        if released:
            with self._tally_lock:
                self.tally.released += len(released)
            log("released", messages=released, why=why, reason=self._stop.reason)

    def _handler_abandoned(self) -> int:
        return int(getattr(self._services.handler, "abandoned", 0))

    def _summary(self, seconds: float, exit_code: int) -> None:
        calls = self._counter.snapshot()
        total = sum(calls.values())
        settled = self.tally.settled
        log(
            "summary",
            ok=self.tally.ok,
            already_done=self.tally.already_done,
            ignored=self.tally.ignored,
            failed=self.tally.failed,
            released=self.tally.released,
            seconds=round(seconds, 2),
            aws_calls=total,
            aws_calls_per_item=round(total / settled, 3) if settled else None,
            calls=calls,
            stop_reason=self._stop.reason,
            exit_code=exit_code,
        )
