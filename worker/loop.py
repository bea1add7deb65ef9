"""The worker loop: receive in tens, process with bounded concurrency, settle every message.

The loop receives up to ``PREFETCH_PER_SLOT`` messages per worker thread (long polling,
at most 10 a call) whenever fewer items are pending than there are threads, so receives cost
about 0.2 call per item; the messages waiting their turn are held by the heartbeat like the
running ones. The prefetch is kept small because every message given back on a stop counts
as one receive against the queue's maxReceiveCount.

It never loses a message on the way out: on a stop it takes nothing new, gives back at once
what has not started (prefetched messages), lets the running items finish until the stop's
deadline and gives back what is still running then. The deadline is ``STOP_GRACE_SECONDS``
after SIGTERM, and a Spot notice's time less a share of its warning (``StopSignal.finish_by``)
after a notice: the host has minutes left, and an item that finishes in them costs no receive.
And a run does not end with work stranded in the queue:

* a worker does not leave while a message it gave back with a delay is still delayed: it
  waits out the delay and polls for ``IDLE_EXIT_SECONDS`` more, so the retry finds a taker;
* the sweeper (process 0 of array child 0, or of a job that is not an array) leaves only when
  the queue shows nothing visible, in flight or delayed on two reads in a row, so messages
  whose worker vanished (Spot reclaim, SIGKILL) are picked up when their visibility lapses.
  Its sweep is capped at the longest deadline a message may have (a batch of
  MAX_BATCH_ITEMS, see below) + visibility timeout + maxReceiveCount x (visibility timeout +
  RETRY_DELAY_SECONDS): a message held elsewhere reaching its deadline and showing again,
  then going round every receive when nobody alive holds it.

A message's deadline is ITEM_TIMEOUT_SECONDS per item it names: one for a lone item, N for a
batch of N sources, capped at SQS's 12-hour visibility limit (``MAX_ITEM_SECONDS``). The
heartbeat holds the message until that deadline and no longer (``InFlight.limit``), the
watchdog fails it there, and within a batch each item still stops at its own
ITEM_TIMEOUT_SECONDS (``worker.batch_process``). Tallies and the summary count items as well
as messages: ``aws_calls_per_item`` divides by the items settled, a batch's sources each.

Before the attempt timeout (JOB_TIMEOUT_SECONDS), which Batch never retries, a worker stops
taking work in time for what it holds to reach its deadline, gives the rest back and exits 75
(retried: a fresh attempt, a fresh clock) while the queue still shows work, else 0.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from worker.config import MAX_ITEM_SECONDS, Config
from worker.inflight import InFlight
from worker.limits import MAX_BATCH_ENTRIES
from worker.logs import log
from worker.manifest import Entry, record_failure
from worker.messages import MAX_BATCH_ITEMS, Message, read_message
from worker.metrics import ITEM_UNITS, SUMMARY_UNITS, CallCounter, MetricSet
from worker.process import Outcome, Services, message_items, process_message
from worker.processes import peak_rss_mib
from worker.queue_depth import queue_counts
from worker.stopping import StopSignal

EXIT_OK = 0
EXIT_STUCK = 3
# EX_TEMPFAIL: come back later. The job definition's retry strategy retries it (and 3).
EXIT_RETRY = 75
PREFETCH_PER_SLOT = 2
# A throttled item (AWS said slow down after botocore's own retries) runs again within its
# receive after 5, 10 and 20 s (jittered), rather than spending a receive.
THROTTLED_RERUNS = 3
THROTTLED_BACKOFF = 5.0


def message_seconds(config: Config, items: int) -> float:
    """Return a message's deadline: ITEM_TIMEOUT_SECONDS per item, within SQS's 12 hours."""
    return min(config.item_timeout * items, MAX_ITEM_SECONDS)


@dataclass
class Tally:
    """Messages by outcome, and the items they named, for the summary line."""

    ok: int = 0
    already_done: int = 0
    ignored: int = 0
    failed: int = 0
    released: int = 0
    items_ok: int = 0
    items_failed: int = 0
    items_already_done: int = 0

    @property
    def settled_items(self) -> int:
        """Items this worker finished with: a batch's sources each, an ignored message one."""
        return self.items_ok + self.items_failed + self.items_already_done + self.ignored

    def add(self, outcome: Outcome) -> None:
        """Count one settled message and its items."""
        name = outcome.kind.replace("-", "_")
        setattr(self, name, getattr(self, name) + 1)
        for name, count in outcome.item_counts().items():
            setattr(self, name, getattr(self, name) + count)


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
        visibility_timeout: int,
    ) -> None:
        """Wire the loop to its collaborators (built by ``worker.__main__``).

        ``sqs`` is used for receives and the sweeper's queue reads; its read timeout must
        exceed the long poll.
        """
        self._config = config
        self._sqs = sqs
        self._services = services
        self._inflight = inflight
        self._stop = stop
        self._counter = counter
        self._max_receive_count = max_receive_count
        self._retry_delay = int(config.retry_delay_seconds)
        # Long enough for a message another worker runs (a batch, maybe) to reach its deadline
        # and, its host gone, to show again; then for it to go round every receive it has left.
        self._sweep_cap = (
            message_seconds(config, MAX_BATCH_ITEMS)
            + visibility_timeout
            + (max_receive_count or 1) * (visibility_timeout + self._retry_delay)
        )
        self._out_of_time = False  # stopped at the attempt's time limit
        self._delayed_until = 0.0  # when the last message this worker delayed becomes visible
        self._sweep_started: float | None = None
        self._empty_reads = 0
        self._unhealthy_logged = False
        self.tally = Tally()
        self._tally_lock = threading.Lock()
        self._item_metrics = MetricSet(ITEM_UNITS, config.metric_dimensions)
        self._summary_metrics = MetricSet(SUMMARY_UNITS, config.metric_dimensions)
        # Messages running now, by message id: their deadline, receive count and items. One the
        # watchdog settled at its deadline goes to ``_expired``, so that its thread, should it
        # ever return, does not settle it a second time.
        self._running: dict[str, tuple[float, int, int]] = {}
        self._settling: set[str] = set()
        self._expired: set[str] = set()

    def run(self) -> int:
        """Run until idle or stopped; return the process exit code."""
        started = time.monotonic()
        pending: dict[Future[None], str] = {}
        exit_code = EXIT_OK
        idle_since = time.monotonic()
        self._inflight.start()
        pool = ThreadPoolExecutor(self._config.concurrency, thread_name_prefix="item")
        work_seconds = self._config.work_seconds
        try:
            while not self._stop.is_set():
                if work_seconds is not None and time.monotonic() - started >= work_seconds:
                    self._out_of_time = True
                    self._stop.set(
                        f"attempt time limit: JOB_TIMEOUT_SECONDS={self._config.job_timeout:g}"
                    )
                    break
                stuck = self._expire_overdue()
                # Items failed at their deadline no longer count, even if their thread runs on.
                pending = {
                    f: m for f, m in pending.items() if not f.done() and not self._expired_id(m)
                }
                if self._handler_abandoned() + stuck >= self._config.concurrency:
                    log("stuck", reason="items hung past their deadline in every slot")
                    self._stop.set("custom code hung in every worker thread")
                    exit_code = EXIT_STUCK
                    break
                if len(pending) >= self._config.concurrency:
                    wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    continue
                if not self._heartbeat_holds():
                    self._stop.wait(1.0)  # not on ``pending``: it may be empty, and return at once
                    continue
                if pending:
                    idle_since = time.monotonic()
                idle_from = max(idle_since, self._delayed_until)
                idle_left = self._config.idle_exit_seconds - (time.monotonic() - idle_from)
                if not pending and idle_left <= 0 and self._may_leave():
                    log("idle", seconds=self._config.idle_exit_seconds)
                    break
                room = PREFETCH_PER_SLOT * self._config.concurrency - len(pending)
                messages = self._receive(self._wait_time(idle_left, bool(pending)), room)
                if self._stop.is_set():
                    self._give_back([m["MessageId"] for m in messages], "stopping")
                    break
                if messages:
                    idle_since = time.monotonic()
                    self._sweep_started = None
                    self._empty_reads = 0
                for message in messages:
                    pending[pool.submit(self._handle, message)] = message["MessageId"]
            if self._stop.is_set():
                self._wind_down(pending)
            if self._out_of_time and self._backlog() != 0:
                exit_code = EXIT_RETRY
        finally:
            # Never wait for threads here: what did not finish in the grace period was given
            # back, and the process exits without it.
            pool.shutdown(wait=False, cancel_futures=True)
        self._inflight.close()
        self._summary(time.monotonic() - started, exit_code)
        return exit_code

    def _wait_time(self, idle_left: float, busy: bool) -> int:
        """Long-poll as long as allowed, but not past the idle deadline when nothing runs."""
        budget = self._config.idle_exit_seconds if busy or idle_left <= 0 else idle_left
        return max(0, min(self._config.wait_time_seconds, int(budget + 0.999)))

    def _heartbeat_holds(self) -> bool:
        """Whether the heartbeat keeps what is held; if not, take no new work for now."""
        healthy = self._inflight.healthy
        if healthy == self._unhealthy_logged:  # log each change once
            self._unhealthy_logged = not healthy
            log("heartbeat", healthy=healthy, taking_work=healthy)
        return healthy

    def _may_leave(self) -> bool:
        """Whether an idle worker may exit now without stranding work in the queue.

        Only the sweeper (process 0 of array child 0) looks at the queue: the others leave,
        since the sweeper stays for whatever their vanished peers left behind.
        """
        if self._config.array_index not in (None, 0) or self._config.process_index != 0:
            return True
        now = time.monotonic()
        if self._sweep_started is None:
            self._sweep_started = now
        backlog = self._backlog()
        self._empty_reads = self._empty_reads + 1 if backlog == 0 else 0
        if self._empty_reads >= 2:
            return True
        if now - self._sweep_started >= self._sweep_cap:
            log("sweep-cap", seconds=self._sweep_cap, backlog=backlog)
            return True
        if self._empty_reads == 0:
            log("sweeping", backlog=backlog)
        return False

    def _backlog(self) -> int | None:
        """Messages visible, in flight or delayed on the queue (approximate); None if unread."""
        try:
            return queue_counts(self._sqs, self._config.queue_url).total
        except Exception as error:
            log("backlog-unread", reason=str(error))
            return None

    def _receive(self, wait_seconds: int, room: int) -> list[dict[str, Any]]:
        received_at = time.monotonic()
        try:
            response = self._sqs.receive_message(
                QueueUrl=self._config.queue_url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH_ENTRIES, room)),
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except Exception as error:
            log("receive-failed", reason=str(error))
            self._stop.wait(1.0)
            return []
        messages = response.get("Messages", [])
        for message in messages:
            # Until its item starts, a prefetched message is held for as long as SQS allows.
            self._inflight.hold(
                message["MessageId"], message["ReceiptHandle"], received_at, float("inf")
            )
        return messages

    def _handle(self, message: dict[str, Any]) -> None:
        """Process one message in a worker thread and settle it."""
        message_id = message["MessageId"]
        if self._stop.is_set():
            self._give_back([message_id], "not started")
            return
        try:
            attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            # Parsed once (up to 1 MiB of JSON): for the deadline, then for every run of it.
            parsed = read_message(message["Body"])
            items = message_items(parsed)
            deadline = time.monotonic() + message_seconds(self._config, items)
            with self._tally_lock:
                self._running[message_id] = (deadline, attempt, items)
            self._inflight.limit(message_id, deadline)
            work_until = deadline - self._config.settle_margin
            outcome = self._process(parsed, attempt, work_until)
            for rerun in range(THROTTLED_RERUNS):
                pause = THROTTLED_BACKOFF * 2**rerun * random.uniform(0.5, 1.0)
                if not outcome.throttled or time.monotonic() + pause >= work_until:
                    break
                log("throttled", message_id=message_id, reason=outcome.reason, pause=pause)
                if self._stop.wait(pause):
                    self._give_back([message_id], "stopping")
                    return
                outcome = self._process(parsed, attempt, work_until)
            self._settle(message_id, attempt, outcome)
        except Exception as error:
            log("item-error", message_id=message_id, reason=f"{type(error).__name__}: {error}")
            with self._tally_lock:
                self._running.pop(message_id, None)
            if self._inflight.release([message_id], self._retry_delay):
                self._note_delay(self._retry_delay)

    def _process(self, message: Message, attempt: int, work_until: float) -> Outcome:
        return process_message(
            message,
            attempt,
            self._config,
            self._services,
            deadline=work_until,
            last_receive=self._is_last(attempt),
        )

    def _is_last(self, attempt: int) -> bool:
        """Whether SQS moves the message to the dead-letter queue if this receive fails."""
        return self._max_receive_count is not None and attempt >= self._max_receive_count

    def _expire_overdue(self) -> int:
        """Fail the items past their deadline whose threads have not returned; count them.

        Their heartbeat has already stopped (it never extends past the deadline). Giving the
        message back here decides its fate now, by its receive count, whatever the thread does
        later; the thread itself cannot be killed, so it is counted as stuck until it returns.
        """
        # Halfway through the settle margin: the work should have stopped, and the message is
        # still ours to give back.
        now = time.monotonic() + self._config.settle_margin / 2
        overdue = []
        with self._tally_lock:
            for message_id, (deadline, attempt, items) in self._running.items():
                if now < deadline:
                    continue
                if message_id not in self._expired and message_id not in self._settling:
                    self._expired.add(message_id)
                    overdue.append((message_id, attempt, items))
            stuck = sum(1 for message_id in self._running if message_id in self._expired)
        for message_id, attempt, items in overdue:
            per_item = f"ITEM_TIMEOUT_SECONDS={self._config.item_timeout:g}"
            reason = f"item passed its deadline ({per_item})"
            if items > 1:
                reason = f"batch of {items} items passed its deadline ({per_item} each)"
            outcome = Outcome("failed", reason, items=items)
            self._settle(message_id, attempt, outcome, watchdog=True)
        return stuck

    def _expired_id(self, message_id: str) -> bool:
        with self._tally_lock:
            return message_id in self._expired

    def _note_delay(self, delay: int) -> None:
        """Remember when a message this worker gave back becomes visible, to stay for it."""
        with self._tally_lock:
            self._delayed_until = max(self._delayed_until, time.monotonic() + delay)

    def _settle(
        self, message_id: str, attempt: int, outcome: Outcome, watchdog: bool = False
    ) -> None:
        with self._tally_lock:
            if not watchdog:
                self._running.pop(message_id, None)
                if message_id in self._expired:
                    self._expired.discard(message_id)
                    log("late-finish", message_id=message_id, outcome=outcome.kind)
                    return
                self._settling.add(message_id)
        try:
            self._decide(message_id, attempt, outcome)
        finally:
            with self._tally_lock:
                self._settling.discard(message_id)

    def _decide(self, message_id: str, attempt: int, outcome: Outcome) -> None:
        if outcome.kind == "failed":
            last = self._is_last(attempt)
            # The last failure goes back at once: SQS moves it to the dead-letter queue on the
            # next receive, and nothing is gained by waiting for that.
            delay = 0 if outcome.permanent or last else self._retry_delay
            if last:
                self._record_failure(message_id, attempt, outcome)
            settled = bool(self._inflight.release([message_id], delay))
            if settled:
                self._note_delay(delay)
            outcome.fields["next"] = "dead-letter queue" if last else f"retry in {delay} s"
        else:
            settled = self._inflight.ack(message_id)
        if not settled:
            # Given back while stopping: the next receiver owns the message. A result stored
            # meanwhile stays (and is found by that receiver), so it is still logged.
            outcome.fields["given_back_before_settling"] = True
        with self._tally_lock:
            self.tally.add(outcome)
        log(
            "item",
            emf=self._item_metrics,
            message_id=message_id,
            outcome=outcome.kind,
            reason=outcome.reason,
            attempt=attempt,
            **outcome.fields,
            **outcome.item_counts(),
        )

    def _record_failure(self, message_id: str, attempt: int, outcome: Outcome) -> None:
        """Leave the run's manifest this message's last failure and its reason (one PUT).

        A batch's record names each of its items, so the manifest counts items. Best effort:
        the message still goes to the dead-letter queue if the record cannot be stored, and
        the log line says why.
        """
        output = outcome.fields.get("output")
        entries = [
            Entry(
                source=source,
                output=output.removeprefix("s3://").split("/", 1)[1] if output else None,
                size=None,
                attempts=attempt,
                reason=outcome.reason,
            )
            for source in outcome.sources or (outcome.fields.get("source"),)
        ]
        try:
            record_failure(self._services.s3, self._config.run, message_id, *entries)
        except Exception as error:
            outcome.fields["failure_record"] = f"not stored: {error}"

    def _wind_down(self, pending: dict[Future[None], str]) -> None:
        """Give back what has not started; let the rest finish until the stop's deadline."""
        not_started = [m for f, m in pending.items() if f.cancel()]
        self._give_back(not_started, "not started")
        running = {f: m for f, m in pending.items() if not f.cancelled()}
        _, unfinished = wait(running, timeout=max(0.0, self._finish_by() - time.monotonic()))
        why = "host leaving" if self._stop.finish_by is not None else "grace period over"
        self._give_back([running[f] for f in unfinished], why)
        kill_all = getattr(self._services.handler, "kill_all", None)
        if unfinished and kill_all:
            kill_all()
        # Anything still held (e.g. received by a poll that returned during the stop).
        self._give_back(self._inflight.held_ids(), "stopping")

    def _finish_by(self) -> float:
        """Until when (monotonic) running items may go on once the worker stops.

        A Spot notice sets it from the notice's time; at the attempt's time limit what runs
        may reach its own deadline (the limit's margin allows it); else STOP_GRACE_SECONDS.
        """
        if self._stop.finish_by is not None:
            return self._stop.finish_by
        grace = self._config.item_timeout if self._out_of_time else self._config.stop_grace_seconds
        return (self._stop.at or time.monotonic()) + grace

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
        settled = self.tally.settled_items
        log(
            "summary",
            emf=self._summary_metrics,
            process=self._config.process_index,
            peak_rss_mib=peak_rss_mib(),
            ok=self.tally.ok,
            already_done=self.tally.already_done,
            ignored=self.tally.ignored,
            failed=self.tally.failed,
            released=self.tally.released,
            items_ok=self.tally.items_ok,
            items_failed=self.tally.items_failed,
            items_already_done=self.tally.items_already_done,
            seconds=round(seconds, 2),
            aws_calls=total,
            aws_calls_per_item=round(total / settled, 3) if settled else None,
            calls=calls,
            stop_reason=self._stop.reason,
            exit_code=exit_code,
        )
