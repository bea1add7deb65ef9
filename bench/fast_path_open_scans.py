"""Peak RSS of one worker process whose items all query at once, consumers taking turns.

The fast path's slot is held only while Arrow makes a batch (worker/query/local), so several
scans are open at once while their consumers work; what bounds the process's memory is then the
number of open scans (``MAX_OPEN_FAST_SCANS``; a query past it runs on the Python evaluator).
Here ``--items`` threads each run ``SELECT *`` over one generated CSV and, after each chunk,
wait until every other thread holds one too, so every open scan keeps its memory between
batches at the same moment: the worst case for a process with WORKER_CONCURRENCY items.
The engine's ``query-path`` log lines say which items took which path; the last line is JSON:
the open-scan cap and the process's peak RSS against the fast path's budget.

    python bench/fast_path_open_scans.py [--size-mib 32] [--items 4] [--open-scans 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.query_engine import BUDGETS_MIB, FileS3, generate  # noqa: E402
from worker.messages import InputFormat  # noqa: E402
from worker.query import QueryRequest, local, run_query  # noqa: E402

TURN_SECONDS = 30  # a consumer whose turn never comes gives up waiting for it


class SharedFileS3(FileS3):
    """:class:`FileS3` for several threads: one ranged GET at a time on the shared file."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` once for every thread."""
        super().__init__(path)
        self._lock = threading.Lock()

    def get_object(self, Bucket: str, Key: str, Range: str, IfMatch: str | None = None) -> Any:
        """Answer one ranged GET, the file's position held by this call alone."""
        with self._lock:
            return super().get_object(Bucket=Bucket, Key=Key, Range=Range, IfMatch=IfMatch)


def peak_rss_mib() -> int:
    """The process's peak resident set (VmHWM) so far, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) >> 10
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--open-scans", type=int, default=local.MAX_OPEN_FAST_SCANS)
    args = parser.parse_args()
    local._OPEN_FAST_SCANS = threading.Semaphore(args.open_scans)
    with tempfile.TemporaryDirectory(prefix="bench-open-scans-") as folder:
        data = Path(folder) / "taxi.csv"
        generate(data, args.size_mib << 20)
        s3 = SharedFileS3(data)
        turns = threading.Barrier(args.items)

        def item() -> None:
            request = QueryRequest("b", "k", "SELECT * FROM S3Object s", InputFormat())
            chunks = run_query(s3, request, "local").chunks()
            with contextlib.suppress(threading.BrokenBarrierError):
                for _ in chunks:
                    turns.wait(TURN_SECONDS)  # every consumer holds a chunk at once
            # Done, or another is: the rest go on without taking turns.
            turns.abort()
            for _ in chunks:
                pass

        started = time.monotonic()
        threads = [threading.Thread(target=item) for _ in range(args.items)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(
        json.dumps(
            {
                "size_mib": args.size_mib,
                "items": args.items,
                "open_scans": args.open_scans,
                "peak_rss_mib": peak_rss_mib(),
                "budget_mib": BUDGETS_MIB["fast path"],
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
