"""Structured logs: one JSON object a line on stdout, which CloudWatch Logs indexes as is."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()


def log(event: str, **fields: Any) -> None:
    """Write one log line; the lock keeps lines from interleaving across worker threads."""
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    line = json.dumps(record, ensure_ascii=False, default=str)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
