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

import pytest

from batchspot.hostile import CASES

ROOT = Path(__file__).resolve().parents[2]
# What the engine may add to the process's peak on any of these inputs.
ENGINE_BUDGET_KIB = 16 << 10
WORKER_BUDGET_KIB = 128 << 10

CHILD = """
import json, sys
from pathlib import Path
from tests.unit.bare_s3 import BytesS3
from worker.messages import InputFormat
from worker.query import QueryError, QueryRequest, auto, run_query  # auto: both engines

def peak_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

s3 = BytesS3({"k": Path(sys.argv[1]).read_bytes()})
request = QueryRequest("b", "k", sys.argv[2], InputFormat(**json.loads(sys.argv[3])))
before = peak_kib()
try:
    outcome = run_query(s3, request, "local").text
except QueryError as error:
    outcome = f"{type(error).__name__}: {error}"
print(json.dumps({"before_kib": before, "after_kib": peak_kib(), "outcome": outcome}))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_in_bounded_memory(tmp_path, name) -> None:
    make, sql, fmt, expected = CASES[name]
    source = tmp_path / "object"
    source.write_bytes(make())
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(source), sql, json.dumps(fmt)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    print(f"{name}: {report}")  # the figures, with pytest -s
    assert expected in report["outcome"]
    assert report["after_kib"] - report["before_kib"] <= ENGINE_BUDGET_KIB
    assert report["after_kib"] <= WORKER_BUDGET_KIB
