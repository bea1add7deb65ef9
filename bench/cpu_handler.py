"""Custom code for ``bench/worker_processes.py``: a fixed amount of pure-Python CPU per item.

A module of its own, so the workers that import it by ``HANDLER`` load nothing else.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

HANDLER = "bench.cpu_handler:burn"
WORK_ENV = "BENCH_WORK"  # rounds of hashing per item


def burn(rows: str) -> dict[str, Any]:
    """Hash the rows ``BENCH_WORK`` times, under the GIL as a Python handler's work is."""
    digest = rows.encode()
    for _ in range(int(os.environ[WORK_ENV])):
        digest = hashlib.sha256(digest).digest()
    return {"rows": rows.count("\n"), "digest": digest.hex()}
