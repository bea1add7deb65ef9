"""Custom code that returns only when the test lets it, so tests wait on events, not clocks.

Each call is marked first (as ``handlers.count_rows`` does), so the test sees it start; it then
blocks until its condition holds. A condition that never comes true fails the item after
``GATE_SECONDS`` rather than hanging the worker.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from tests.integration.handlers import count_rows
from tests.integration.harness import wait_until

GATE_SECONDS = 120
# The Worker method that gives back what has not started and waits for what runs.
WIND_DOWN = "_wind_down"


def count_rows_when_gate_opens(rows: str) -> dict[str, Any]:
    """Return once the file named by ``TEST_GATE`` exists (the test creates it)."""
    result = count_rows(rows)
    gate = Path(os.environ["TEST_GATE"])
    wait_until(gate.exists, f"the test to open {gate}", timeout=GATE_SECONDS)
    return result


def count_rows_when_peers_run(rows: str) -> dict[str, Any]:
    """Return once ``TEST_PEERS`` calls, in any worker, have started.

    A worker of N threads can hold at most N calls blocked here, so with more peers than
    threads the barrier opens only when another worker has taken work too.
    """
    result = count_rows(rows)
    marks = Path(os.environ["TEST_MARK_DIR"])
    peers = int(os.environ["TEST_PEERS"])
    wait_until(
        lambda: len(list(marks.iterdir())) >= peers,
        f"{peers} calls of the custom code at once",
        timeout=GATE_SECONDS,
    )
    return result


def count_rows_when_worker_winds_down(rows: str) -> dict[str, Any]:
    """Return once the worker's main thread is in its wind-down (a stop has been handled).

    The item then needs the grace period to finish: returning earlier, it would be done
    before the stop mattered.
    """
    result = count_rows(rows)
    main = threading.main_thread().ident
    wait_until(
        lambda: _in_stack(sys._current_frames().get(main), WIND_DOWN),
        f"the worker's main thread to enter {WIND_DOWN}",
        timeout=GATE_SECONDS,
    )
    return result


def _in_stack(frame: Any, function: str) -> bool:
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False
