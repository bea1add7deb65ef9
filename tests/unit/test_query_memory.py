"""Peak memory on hostile inputs (issue 11): each refused while the process stays small.

Each input runs in a fresh interpreter (so the peak is the query's own) against a bare
in-memory S3 (moto alone would cost ~65 MiB), and the child reports its ``VmHWM`` before and
after the query. The issue's bound is VmHWM <= 128 MiB for the whole worker process; the
engine's own share is held to a small fraction of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchspot_support.hostile import CASES, PARQUET_CASES, parquet_file, ran_fast_path

ROOT = Path(__file__).resolve().parents[2]
# What the engine may add to the process's peak on any of these inputs.
ENGINE_BUDGET_KIB = 16 << 10
WORKER_BUDGET_KIB = 128 << 10
# Issue 14: a process that loads the fast path (pyarrow, ~80 MiB) may peak at 256 MiB.
FAST_PATH_BUDGET_KIB = 256 << 10
# The libraries' resident file pages (their code: shared, reclaimable) that budget assumed. The
# same wheels, installed by another pip run on this machine, were resident at 85 MiB instead of
# 46 MiB after `import pyarrow` (RssFile; anonymous memory the same to the kB), which moved the
# 120 MiB row group's peak from 229 to 265 MiB: file pages count here up to this much only.
LIBRARY_FILE_KIB = 48 << 10


def fast_path_peak_kib(report: dict) -> int:
    """The child's peak, its libraries' file pages counted at most at LIBRARY_FILE_KIB."""
    return report["after_kib"] - max(0, report["file_kib"] - LIBRARY_FILE_KIB)


CHILD = """
import json, sys
from pathlib import Path
from tests.unit.bare_s3 import BytesS3
from worker.messages import InputFormat
from worker.query import QueryError, QueryRequest, auto, run_query  # auto: both engines

def peak_kib(field="VmHWM:"):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])

s3 = BytesS3({"k": Path(sys.argv[1]).read_bytes()})
request = QueryRequest("b", "k", sys.argv[2], InputFormat(**json.loads(sys.argv[3])))
before = peak_kib()
try:
    outcome = run_query(s3, request, "local").text
except QueryError as error:
    outcome = f"{type(error).__name__}: {error}"
print(json.dumps({"before_kib": before, "after_kib": peak_kib(), "file_kib": peak_kib("RssFile:"),
                  "outcome": outcome}))
"""


def run_child(
    script: str, tmp_path: Path, body: bytes, sql: str, fmt: dict[str, str]
) -> tuple[dict, str]:
    """Run ``script`` on ``body`` in a fresh interpreter: its report and the log lines before."""
    source = tmp_path / "object"
    source.write_bytes(body)
    done = subprocess.run(
        [sys.executable, "-c", script, str(source), sql, json.dumps(fmt)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *logs, report = done.stdout.splitlines()
    return json.loads(report), "\n".join(logs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_in_bounded_memory(tmp_path, name) -> None:
    make, sql, fmt, expected = CASES[name]
    report, logs = run_child(CHILD, tmp_path, make(), sql, fmt)
    print(f"{name}: {report}")  # the figures, with pytest -s
    assert expected in report["outcome"]
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    if ran_fast_path(events):  # GZIP CSV tries the fast path first, which loads pyarrow
        assert fast_path_peak_kib(report) <= FAST_PATH_BUDGET_KIB
        return
    assert report["after_kib"] - report["before_kib"] <= ENGINE_BUDGET_KIB
    assert report["after_kib"] <= WORKER_BUDGET_KIB


# Issue 14: a process that loads the fast path (pyarrow, ~80 MiB) may peak at 256 MiB. The
# object is served from its file, range by range, so the peak is the engine's and the process's
# alone: it stays flat in the object's size, Arrow's readahead being a fixed number of blocks.
FAST_PATH_CHILD = CHILD.replace(
    'BytesS3({"k": Path(sys.argv[1]).read_bytes()})', "FileS3(Path(sys.argv[1]))"
).replace(
    "from tests.unit.bare_s3 import BytesS3",
    """import io
from tests.unit.bare_s3 import byte_range
class FileS3:
    def __init__(self, path):
        self.path, self.size = path, path.stat().st_size
    def get_object(self, Bucket, Key, Range, IfMatch=None):
        # The body streams from the file as S3's does from the network: the range is never
        # whole in this process until the reader has read it.
        first, last = byte_range(Range, self.size)
        last = min(last, self.size - 1)  # S3 ends a range at the object's end
        length = last + 1 - first
        return {
            "Body": io.BufferedReader(Part(self.path, first, length)),
            "ContentLength": length,
            "ContentRange": f"bytes {first}-{last}/{self.size}",
        }
class Part(io.RawIOBase):
    def __init__(self, path, first, length):
        self.file, self.left = path.open("rb"), length
        self.file.seek(first)
    def readable(self):
        return True
    def readinto(self, buffer):
        data = self.file.read(min(len(buffer), self.left))
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)
""",
)
TAXI_ROW = b"2,5,3.10,17.50,2.25,1,Zone 7\n"
TAXI_LINE = b'{"v":2,"passengers":5,"d":3.1,"fare":17.5,"tip":2.25,"p":1,"zone":"Zone 7"}\n'
FAST_PATH_CASES = {
    "128 MiB CSV, WHERE + SUM": (
        lambda: b"v,passengers,d,fare,tip,p,zone\n" + TAXI_ROW * ((128 << 20) // len(TAXI_ROW)),
        "SELECT SUM(CAST(s.tip AS FLOAT)) FROM S3Object s WHERE CAST(s.passengers AS INT) > 3",
        {},
        '{"_1":',
    ),
    "64 MiB CSV line, uncompressed": (
        lambda: b"a\n" + b"1\n" * 10 + b"x" * (64 << 20) + b"\n",
        "SELECT COUNT(*) FROM S3Object s",
        {},
        "OverMaxRecordSize",
    ),
    "128 MiB of JSON lines, WHERE + SUM": (
        lambda: TAXI_LINE * ((128 << 20) // len(TAXI_LINE)),
        "SELECT SUM(s.tip), MAX(s.zone) FROM S3Object s WHERE s.passengers > 3",
        {"kind": "JSON"},
        '{"_1":',
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(FAST_PATH_CASES))
def test_queries_the_fast_path_runs_stay_within_its_budget(tmp_path, name) -> None:
    make, sql, fmt, expected = FAST_PATH_CASES[name]
    report, logs = run_child(FAST_PATH_CHILD, tmp_path, make(), sql, fmt)
    print(f"{name}: {report}")  # the figures, with pytest -s
    assert '"path": "fast"' in logs  # the fast path ran (and, for the line, declined)
    assert expected in report["outcome"]
    assert fast_path_peak_kib(report) <= FAST_PATH_BUDGET_KIB


def _row_group_of(mib: int, compression: str, all_random: bool = False, **options: Any) -> bytes:
    """Two int64 columns in one row group of ``mib`` MiB uncompressed (half of them random, or
    all: "counting" then random too)."""
    import os

    import pyarrow as pa

    rows = (mib << 20) // 16

    def random_values() -> pa.Array:
        return pa.Array.from_buffers(pa.int64(), rows, [None, pa.py_buffer(os.urandom(rows * 8))])

    random = random_values()
    counting = random_values() if all_random else pa.array(range(rows), pa.int64())
    return parquet_file(
        {"random": random, "counting": counting},
        row_group_size=rows,
        compression=compression,
        use_dictionary=False,
        **options,
    )


PARQUET_MEMORY_CASES = {
    "120 MiB row group, uncompressed, WHERE + SUM": (
        lambda: _row_group_of(120, "none"),
        "SELECT SUM(s.counting) FROM S3Object s WHERE s.random > 0",
        '{"_1":',
    ),
    # Snappy chunks are inflated whole outside pyarrow up to 48 MiB (parquet_inflate), beside the
    # fetched chunks (here as large: random bytes do not compress); past that, pyarrow reads
    # them a page at a time.
    "47 MiB Snappy row group of random bytes, inflated whole, WHERE + SUM": (
        lambda: _row_group_of(47, "snappy", all_random=True),
        "SELECT SUM(s.counting) FROM S3Object s WHERE s.random > 0",
        '{"_1":',
    ),
    "120 MiB Snappy row group, WHERE + SUM": (
        lambda: _row_group_of(120, "snappy"),
        "SELECT SUM(s.counting) FROM S3Object s WHERE s.random > 0",
        '{"_1":',
    ),
    # The page path holds its span's pages (half the row group at most), decoded 16 MiB a time.
    "120 MiB row group, its page index, a sorted WHERE over half of it": (
        lambda: _row_group_of(120, "none", write_page_index=True),
        f"SELECT SUM(s.random) FROM S3Object s WHERE s.counting < {(120 << 20) // 16 // 2 - 1}",
        '{"_1":',
    ),
    **{name: (make, sql, expected) for name, (make, sql, _, expected) in PARQUET_CASES.items()},
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(PARQUET_MEMORY_CASES))
def test_parquet_stays_within_the_fast_paths_budget(tmp_path, name) -> None:
    """Issue 22: row groups up to 128 MiB uncompressed in the columns read, and every hostile
    file, within the 256 MiB of a process that loaded pyarrow."""
    make, sql, expected = PARQUET_MEMORY_CASES[name]
    report, _ = run_child(FAST_PATH_CHILD, tmp_path, make(), sql, {"kind": "PARQUET"})
    print(f"{name}: {report}")  # the figures, with pytest -s
    assert expected in report["outcome"]
    assert fast_path_peak_kib(report) <= FAST_PATH_BUDGET_KIB
