"""Custom code for the integration tests, steered by environment variables of the worker."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any


def count_rows(rows: str) -> dict[str, Any]:
    """Record the call (for exactly-once checks), sleep if asked, summarise the rows."""
    marks = os.environ.get("TEST_MARK_DIR")
    if marks:
        first = json.loads(rows.splitlines()[0]) if rows.strip() else {}
        (Path(marks) / f"{first.get('id', 'none')}.{uuid.uuid4().hex}").touch()
    time.sleep(float(os.environ.get("TEST_SLEEP_SECONDS", "0")))
    lines = [json.loads(line) for line in rows.splitlines() if line.strip()]
    return {"rows": len(lines), "ids": [line.get("id") for line in lines]}


def explode(rows: str) -> dict[str, Any]:
    """Fail on inputs whose first value says so, succeed otherwise."""
    if '"boom"' in rows:
        raise RuntimeError("the custom code refused this input")
    if '"hang"' in rows:
        time.sleep(60)
    if '"huge"' in rows:
        return {"blob": "x" * 4096}
    return {"rows": len(rows.splitlines())}


def large(rows: str) -> dict[str, Any]:
    """Return a result of ``TEST_OUTPUT_MB`` megabytes, bigger than one upload part."""
    size = int(float(os.environ.get("TEST_OUTPUT_MB", "20")) * 1024 * 1024)
    return {"rows": rows, "padding": "x" * size}


def fail_first_call(rows: str) -> dict[str, Any]:
    """Fail the first call for the row whose id is ``TEST_FLAKY_ID``, then count as usual.

    The first failure is marked in ``TEST_MARK_DIR``, so the next receive finds it healed.
    """
    first = json.loads(rows.splitlines()[0]) if rows.strip() else {}
    if first.get("id") == os.environ["TEST_FLAKY_ID"]:
        mark = Path(os.environ["TEST_MARK_DIR"]) / "failed-once"
        if not mark.exists():
            mark.touch()
            raise RuntimeError("a transient failure of the custom code")
    return count_rows(rows)
