"""When to stop: SIGTERM/SIGINT, or the EC2 Spot two-minute interruption notice.

Batch stops a job with SIGTERM (then SIGKILL after the ECS stop timeout); a reclaimed Spot host
announces itself on the instance metadata service about two minutes ahead (EC2 user guide,
"Spot Instance interruption notices"), and nothing else warns the worker: ECS does not drain
standalone tasks, which Batch jobs are, so no SIGTERM follows a notice. Both set one event
that the worker loop reads: take nothing new, give back at once what has not started, let
what runs finish while it may, give back the rest.

After SIGTERM, running items may finish within ``STOP_GRACE_SECONDS``. After a notice they may
finish until the notice's ``time`` less a share of the warning it gave (``finish_by``): the
warning is read from the notice itself, so a host given less than two minutes (or a chaos
run's compressed warning) is handled the same way.

After a notice the child must end as Batch retries it, or its slot (and, for array child 0,
the sweeper) is gone for good. So it does not exit 0 (SUCCEEDED): it waits for the host to go
(:func:`wait_for_host`), which Batch records as ``Host EC2 (instance i-…) terminated.`` and the
retry strategy retries; if the host is still there a while after the notice's time, the
caller exits with a code the strategy retries instead.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from types import FrameType

from worker.logs import log

IMDS_DEFAULT_ENDPOINT = "http://169.254.169.254/"
IMDS_TIMEOUT = 1.0
TOKEN_TTL_SECONDS = 21600
# Spot gives two minutes' warning; a notice whose time cannot be read is taken as that.
SPOT_WARNING_SECONDS = 120.0
# How long past the notice's time a host may take to go before the worker stops waiting.
HOST_GONE_MARGIN_SECONDS = 60.0
# The share of a notice's warning kept at its end, when running items no longer may finish:
# time to store a result already on its way and for the give-back of what still runs to reach
# SQS before the host goes (30 s of Spot's two minutes).
HOST_MARGIN_SHARE = 0.25
# The first look at the notice is awaited this long before taking work: a host that already
# has its notice takes none. Two IMDS calls (token, notice) of IMDS_TIMEOUT each, and slack.
FIRST_CHECK_TIMEOUT = 3 * IMDS_TIMEOUT


class StopSignal:
    """A once-set flag that records why and when the worker was asked to stop."""

    def __init__(self) -> None:
        """Start not stopped."""
        self._event = threading.Event()
        self.reason: str | None = None
        self.at: float | None = None
        # Set by a Spot interruption notice: when (epoch seconds) the host is to go, and until
        # when (monotonic) running items may finish.
        self.host_leaves_at: float | None = None
        self.finish_by: float | None = None

    def set(self, reason: str) -> None:
        """Ask the worker to stop; the first reason is the one kept."""
        if not self._event.is_set():
            self.reason = reason
            self.at = time.monotonic()
            self._event.set()
            log("stopping", reason=reason)

    def host_leaving(self, leaves_at: float, reason: str) -> None:
        """Stop for a Spot notice: the host goes at ``leaves_at`` (epoch seconds).

        Running items may go on until ``HOST_MARGIN_SHARE`` of the warning is left; a notice
        whose time has passed leaves them none.
        """
        warning = max(0.0, leaves_at - time.time())
        self.host_leaves_at = leaves_at
        self.finish_by = time.monotonic() + warning * (1 - HOST_MARGIN_SHARE)
        self.set(reason)

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on a stop."""
        return self._event.wait(timeout)


def install_signal_handlers(stop: StopSignal) -> None:
    """Turn SIGTERM and SIGINT into a graceful stop."""

    def on_signal(number: int, _frame: FrameType | None) -> None:
        stop.set(signal.Signals(number).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


class SpotNoticeWatcher:
    """Polls IMDSv2 ``spot/instance-action`` and sets the stop signal when a notice appears.

    The endpoint comes from botocore's own ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and the watch
    honours ``AWS_EC2_METADATA_DISABLED``; where there is no metadata service (Fargate, a
    laptop), the first token request fails and the watch ends quietly after one log line.
    """

    def __init__(self, stop: StopSignal, interval: float) -> None:
        """Watch for a notice every ``interval`` seconds once started."""
        self._stop = stop
        self._interval = interval
        self._endpoint = os.environ.get(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT", IMDS_DEFAULT_ENDPOINT
        ).rstrip("/")
        self._thread = threading.Thread(target=self._run, name="spot-notice", daemon=True)
        self._first_check = threading.Event()

    def start(self) -> None:
        """Start watching, unless instance metadata is disabled; the first look is at once."""
        if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
            self._first_check.set()
            return
        self._thread.start()

    def wait_for_first_check(self) -> None:
        """Return once the notice was looked for (or could not be), at most a few seconds.

        A child that Batch placed on a host already given its notice then takes no work, and
        spends none of its messages' receives giving it back.
        """
        self._first_check.wait(FIRST_CHECK_TIMEOUT)

    def _token(self) -> str:
        request = urllib.request.Request(
            f"{self._endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        with urllib.request.urlopen(request, timeout=IMDS_TIMEOUT) as response:
            return response.read().decode()

    def _notice(self, token: str) -> dict[str, str] | None:
        request = urllib.request.Request(
            f"{self._endpoint}/latest/meta-data/spot/instance-action",
            headers={"X-aws-ec2-metadata-token": token},
        )
        try:
            with urllib.request.urlopen(request, timeout=IMDS_TIMEOUT) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code == 404:  # no interruption scheduled
                return None
            raise

    def _run(self) -> None:
        try:
            self._watch()
        finally:
            self._first_check.set()

    def _watch(self) -> None:
        try:
            token = self._token()
        except OSError as error:
            log("spot-notice-off", reason=f"no instance metadata service: {error}")
            return
        token_at = time.monotonic()
        while True:
            try:
                if time.monotonic() - token_at > TOKEN_TTL_SECONDS / 2:
                    token, token_at = self._token(), time.monotonic()
                notice = self._notice(token)
            except (OSError, ValueError) as error:
                log("spot-notice-error", reason=str(error))
                notice = None
            if notice is not None:
                self._stop.host_leaving(
                    notice_time(notice), f"spot interruption notice: {json.dumps(notice)}"
                )
                return
            self._first_check.set()
            if self._stop.wait(self._interval):
                return


def notice_time(notice: dict[str, str]) -> float:
    """When a notice says the host goes (``time``, ISO 8601 UTC), in epoch seconds."""
    try:
        return datetime.fromisoformat(notice["time"].replace("Z", "+00:00")).timestamp()
    except (KeyError, TypeError, ValueError, AttributeError):
        return time.time() + SPOT_WARNING_SECONDS


def wait_for_host(stop: StopSignal) -> None:
    """After a Spot notice, with every message given back: wait for the host to go.

    Returns only if the host is still there ``HOST_GONE_MARGIN_SECONDS`` after the notice's
    time (an interruption that stops rather than terminates, or one withdrawn).
    """
    if stop.host_leaves_at is None:
        return
    until = stop.host_leaves_at + HOST_GONE_MARGIN_SECONDS
    log("waiting-for-host", seconds=round(max(0.0, until - time.time()), 1))
    while (left := until - time.time()) > 0:
        time.sleep(min(left, 5.0))
    log("host-still-here", reason="the host outlived its Spot notice; exiting to be retried")
