"""What a worker keeps for life is frozen out of full collections; what its items make is not.

Python's documentation of ``gc.freeze``: "Freeze all the objects tracked by the garbage
collector; move them to a permanent generation and ignore them in all the future
collections." (https://docs.python.org/3/library/gc.html#gc.freeze)
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

from worker.long_lived import freeze_new_imports

ROOT = Path(__file__).resolve().parents[2]


class _Node:
    """A container that can sit in a reference cycle."""

    partner: _Node | None = None


def test_an_items_reference_cycle_is_still_collected_after_the_freeze() -> None:
    freeze_new_imports()  # start-up
    cycle = _Node()
    cycle.partner = _Node()
    cycle.partner.partner = cycle
    alive = weakref.ref(cycle)
    freeze_new_imports()  # every item calls it again, importing nothing new
    del cycle
    gc.collect()
    assert alive() is None, "an item's garbage was frozen, so it is never collected"


def test_a_worker_process_freezes_at_its_first_parquet_item_and_not_again() -> None:
    """A fresh interpreter, as a worker process: its first Parquet item imports the engine.

    After that item the objects alive are frozen (pyarrow's and the engine's modules among
    them); the second item imports nothing, so it freezes nothing more.
    """
    script = textwrap.dedent(
        """
        import gc, io, json
        import pyarrow as pa, pyarrow.parquet as pq
        from tests.unit.bare_s3 import BytesS3
        from worker.messages import InputFormat
        from worker.query import QueryRequest, run_query

        sink = io.BytesIO()
        pq.write_table(pa.table({"n": list(range(1000))}), sink)
        s3 = BytesS3({"k.parquet": sink.getvalue()})
        request = QueryRequest(
            "b", "k.parquet", "SELECT SUM(s.n) FROM S3Object s", InputFormat(kind="PARQUET")
        )
        counts = [gc.get_freeze_count()]
        for _ in range(2):
            "".join(run_query(s3, request, "local").chunks())
            counts.append(gc.get_freeze_count())
        print(json.dumps(counts))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, after_first, after_second = json.loads(done.stdout.splitlines()[-1])
    assert before == 0
    assert after_first > 10_000, "the process's long-lived objects were not frozen"
    assert after_second == after_first, "the second item froze its own objects"
